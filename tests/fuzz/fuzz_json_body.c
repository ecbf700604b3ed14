/* A JSON request body against what the services enforce: the body check
 * of every operation with a request schema in services/<name>/openapi.json
 * (ag_schema_check, the documents read at start from AGORA_SOURCE_DIR) and
 * the validators handlers use (ag_v_*), on the same parse as ag_req_json's
 * (duplicate keys refused). The first input byte picks the schema. A body
 * the check finds fine yields no problem; one it refuses yields problems
 * that each name a field and say something. */
#include "fuzz.h"

#include <dirent.h>

#include "agora/json.h"

#define MAX_SCHEMAS 256

static json_t *g_docs[32];
static int g_ndocs;
static struct {
    const json_t *doc, *schema;
} g_schemas[MAX_SCHEMAS];
static int g_nschemas;

static void load(const char *path)
{
    json_t *doc = json_load_file(path, 0, NULL);
    if (!doc || g_ndocs == 32) abort();
    g_docs[g_ndocs++] = doc;
    const char *p, *m;
    json_t *item, *op;
    json_object_foreach(json_object_get(doc, "paths"), p, item) json_object_foreach(item, m, op)
    {
        json_t *s = json_object_get(
            json_object_get(json_object_get(json_object_get(op, "requestBody"), "content"),
                            "application/json"),
            "schema");
        if (json_is_object(s) && g_nschemas < MAX_SCHEMAS) {
            g_schemas[g_nschemas].doc = doc;
            g_schemas[g_nschemas++].schema = s;
        }
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/services", AGORA_SOURCE_DIR);
    DIR *d = opendir(dir);
    if (!d) abort();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s/openapi.json", dir, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        fclose(f);
        load(path);
    }
    closedir(d);
    if (g_nschemas == 0) abort();
    return 0;
}

static void problems_named(const ag_validator *v)
{
    size_t i;
    json_t *d;
    json_array_foreach(v->details, i, d)
    {
        FUZZ_CHECK(json_is_string(json_object_get(d, "field")));
        const char *msg = json_string_value(json_object_get(d, "message"));
        FUZZ_CHECK(msg && *msg);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    json_t *body = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, NULL);
    if (!body) return 0;
    int k = data[0] % g_nschemas;
    ag_validator v;
    ag_v_init(&v);
    ag_schema_check(&v, g_schemas[k].doc, g_schemas[k].schema, body);
    problems_named(&v);
    if (!ag_v_ok(&v)) FUZZ_CHECK(v.first[0] != '\0');
    ag_v_release(&v);

    /* the handlers' validators, on whatever fields the body has */
    static const char *const allowed[] = {"name", "email", "quantity", "items", NULL};
    ag_v_init(&v);
    if (ag_v_fields(&v, body, allowed)) {
        ag_v_str(&v, body, "name", AG_V_REQUIRED, 1, 50);
        ag_v_email(&v, body, "email", AG_V_NULLABLE);
        long long q;
        ag_v_int(&v, body, "quantity", 0, 1, 99, &q);
        bool b;
        ag_v_bool(&v, body, "flag", 0, &b);
        ag_v_array(&v, body, "items", 0, 1, 50);
        ag_v_object(&v, body, "address", AG_V_NULLABLE);
    }
    problems_named(&v);
    ag_v_release(&v);
    int64_t n;
    ag_json_int_of(body, 0, &n);
    json_decref(body);
    return 0;
}
