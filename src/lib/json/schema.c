/*
 * schema.c — request bodies checked against their OpenAPI 3.0 schema
 * (agora/json.h: ag_schema_check).
 *
 * Hand-written: Debian packages no C JSON Schema validator (the
 * ones that exist, e.g. json-schema-validator, are C++ or unpackaged), and
 * what a request schema here uses is a small subset: type, nullable, enum,
 * minLength/maxLength (counted in code points, as ag_v_str does),
 * pattern (POSIX extended regular expressions, regcomp(3): our patterns
 * keep to what ERE and ECMA-262 read alike), format email, minimum/maximum
 * (and 3.0's boolean exclusiveMinimum/Maximum), properties, required,
 * additionalProperties (false or a schema), minProperties/maxProperties,
 * minItems/maxItems, items, oneOf/anyOf/allOf/not, and "$ref": "#/…" into
 * the same document. A keyword
 * outside the subset is ignored, as JSON Schema ignores unknown keywords;
 * tests/docs checks that no request schema uses one.
 *
 * Problems are recorded in an ag_validator as the handlers' own are:
 * {field: "items[0].quantity", message: "items[0].quantity must be between
 * 1 and 99"}, every problem of the body, not only the first.
 */
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "agora/json.h"

/* The schema `s` points to, following "$ref"s within `doc` (at most 16
 * deep: a cycle is a broken document, and the schema is then NULL). */
static const json_t *deref(const json_t *doc, const json_t *s)
{
    for (int depth = 0; depth < 16 && json_is_object(s); depth++) {
        const char *ref = json_string_value(json_object_get(s, "$ref"));
        if (!ref) return s;
        if (strncmp(ref, "#/", 2) != 0) return NULL;
        const json_t *at = doc;
        char part[128];
        for (const char *p = ref + 2; at && *p;) {
            size_t n = strcspn(p, "/");
            if (n >= sizeof part) return NULL;
            memcpy(part, p, n);
            part[n] = '\0';
            at = json_object_get(at, part);
            p += n + (p[n] == '/');
        }
        s = at;
    }
    return json_is_object(s) ? s : NULL;
}

static size_t code_points(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80) n++;
    return n;
}

static bool looks_like_email(const char *s)
{
    const char *at = strchr(s, '@');
    return at && at != s && !strchr(at + 1, '@') && strchr(at + 1, '.') && at[1] != '.' &&
           s[strlen(s) - 1] != '.' && !strpbrk(s, " \t\r\n\"<>(),;:\\[]") && strlen(s) <= 254;
}

static bool matches(const char *pattern, const char *s)
{
    regex_t re;
    if (regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) != 0) return true; /* not ours to judge */
    bool ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/* "the body" at the top, else the path. */
static const char *shown(const char *path)
{
    return *path ? path : "the body";
}

static const char *kind_of(const json_t *x)
{
    switch (json_typeof(x)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "true or false";
    default: return "null";
    }
}

static bool type_ok(const char *type, const json_t *x)
{
    if (strcmp(type, "object") == 0) return json_is_object(x);
    if (strcmp(type, "array") == 0) return json_is_array(x);
    if (strcmp(type, "string") == 0) return json_is_string(x);
    if (strcmp(type, "integer") == 0) return json_is_integer(x);
    if (strcmp(type, "number") == 0) return json_is_number(x);
    if (strcmp(type, "boolean") == 0) return json_is_boolean(x);
    return true;
}

static const char *type_words(const char *type)
{
    if (strcmp(type, "object") == 0) return "an object";
    if (strcmp(type, "array") == 0) return "an array";
    if (strcmp(type, "string") == 0) return "a string";
    if (strcmp(type, "integer") == 0) return "an integer";
    if (strcmp(type, "number") == 0) return "a number";
    if (strcmp(type, "boolean") == 0) return "true or false";
    return type;
}

static void check(ag_validator *v, const json_t *doc, const json_t *schema, const json_t *x,
                  const char *path);

/* The number of problems `schema` finds in `x`, recorded in `into` when
 * it is not NULL. */
static size_t problems(const json_t *doc, const json_t *schema, const json_t *x, const char *path,
                       ag_validator *into)
{
    ag_validator scratch;
    ag_v_init(&scratch);
    check(&scratch, doc, schema, x, path);
    size_t n = json_array_size(scratch.details);
    if (into) {
        size_t i;
        json_t *d;
        json_array_foreach (scratch.details, i, d)
            ag_v_fail(into, json_string_value(json_object_get(d, "field")), "%s",
                      json_string_value(json_object_get(d, "message")));
    }
    ag_v_release(&scratch);
    return n;
}

/* The branch of a oneOf/anyOf whose "type"-like enum property (a
 * discriminator: paymentMethod's type card|wallet) the value names, or
 * NULL. */
static const json_t *named_branch(const json_t *doc, const json_t *branches, const json_t *x)
{
    if (!json_is_object(x)) return NULL;
    size_t i;
    json_t *b;
    json_array_foreach (branches, i, b) {
        const json_t *s = deref(doc, b);
        const json_t *props = s ? json_object_get(s, "properties") : NULL;
        const char *key;
        json_t *p;
        json_object_foreach ((json_t *)props, key, p) {
            const json_t *ps = deref(doc, p);
            const json_t *en = ps ? json_object_get(ps, "enum") : NULL;
            const json_t *given = json_object_get(x, key);
            if (!json_is_array(en) || json_array_size(en) != 1 || !given) continue;
            if (json_equal(json_array_get(en, 0), (json_t *)given)) return s;
        }
    }
    return NULL;
}

static void check_object(ag_validator *v, const json_t *doc, const json_t *s, const json_t *x,
                         const char *path)
{
    const json_t *mn = json_object_get(s, "minProperties"), *mx = json_object_get(s, "maxProperties");
    size_t count = json_object_size(x);
    if (mn && count < (size_t)json_integer_value(mn))
        ag_v_fail(v, shown(path), "%s must have at least %lld field%s", shown(path),
                  (long long)json_integer_value(mn), json_integer_value(mn) == 1 ? "" : "s");
    if (mx && count > (size_t)json_integer_value(mx))
        ag_v_fail(v, shown(path), "%s must have at most %lld fields", shown(path),
                  (long long)json_integer_value(mx));
    const json_t *props = json_object_get(s, "properties");
    const json_t *req = json_object_get(s, "required");
    size_t i;
    json_t *r;
    char sub[512];
    json_array_foreach (req, i, r) {
        const char *name = json_string_value(r);
        if (!name || json_object_get(x, name)) continue;
        snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", name);
        ag_v_fail(v, sub, "%s is required", sub);
    }
    const json_t *extra = json_object_get(s, "additionalProperties");
    const char *key;
    json_t *val;
    json_object_foreach ((json_t *)x, key, val) {
        snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", key);
        const json_t *ps = json_object_get(props, key);
        if (ps)
            check(v, doc, ps, val, sub);
        else if (json_is_false(extra))
            ag_v_fail(v, sub, "%s is not a known field", sub);
        else if (json_is_object(extra))
            check(v, doc, extra, val, sub);
    }
}

static void check_array(ag_validator *v, const json_t *doc, const json_t *s, const json_t *x,
                        const char *path)
{
    size_t n = json_array_size(x);
    const json_t *mn = json_object_get(s, "minItems"), *mx = json_object_get(s, "maxItems");
    if ((mn && n < (size_t)json_integer_value(mn)) || (mx && n > (size_t)json_integer_value(mx))) {
        if (mn && mx)
            ag_v_fail(v, shown(path), "%s must have %lld to %lld items", shown(path),
                      (long long)json_integer_value(mn), (long long)json_integer_value(mx));
        else if (mx)
            ag_v_fail(v, shown(path), "%s must have at most %lld items", shown(path),
                      (long long)json_integer_value(mx));
        else
            ag_v_fail(v, shown(path), "%s must have at least %lld items", shown(path),
                      (long long)json_integer_value(mn));
    }
    const json_t *items = json_object_get(s, "items");
    if (!items) return;
    size_t i;
    json_t *it;
    char sub[512];
    json_array_foreach (x, i, it) {
        snprintf(sub, sizeof sub, "%s[%zu]", path, i);
        check(v, doc, items, it, sub);
    }
}

static void check_string(ag_validator *v, const json_t *s, const json_t *x, const char *path)
{
    const char *str = json_string_value(x);
    if (strlen(str) != json_string_length(x)) {
        ag_v_fail(v, shown(path), "%s must not contain NUL characters", shown(path));
        return;
    }
    size_t n = code_points(str);
    const json_t *mn = json_object_get(s, "minLength"), *mx = json_object_get(s, "maxLength");
    long long lo = mn ? json_integer_value(mn) : 0, hi = mx ? json_integer_value(mx) : -1;
    if ((long long)n < lo || (hi >= 0 && (long long)n > hi)) {
        if (lo > 0 && hi >= 0)
            ag_v_fail(v, shown(path), "%s must be %lld to %lld characters long", shown(path), lo,
                      hi);
        else if (hi >= 0)
            ag_v_fail(v, shown(path), "%s must be at most %lld characters long", shown(path),
                      hi);
        else
            ag_v_fail(v, shown(path), "%s must be at least %lld characters long", shown(path),
                      lo);
        return;
    }
    const char *fmt = json_string_value(json_object_get(s, "format"));
    if (fmt && strcmp(fmt, "email") == 0 && !looks_like_email(str)) {
        ag_v_fail(v, shown(path), "%s must be a valid e-mail address", shown(path));
        return;
    }
    const char *pattern = json_string_value(json_object_get(s, "pattern"));
    if (pattern && !matches(pattern, str))
        ag_v_fail(v, shown(path), "%s must match %s", shown(path), pattern);
}

static void check_number(ag_validator *v, const json_t *s, const json_t *x, const char *path)
{
    double d = json_number_value(x);
    const json_t *mn = json_object_get(s, "minimum"), *mx = json_object_get(s, "maximum");
    bool xmn = json_is_true(json_object_get(s, "exclusiveMinimum"));
    bool xmx = json_is_true(json_object_get(s, "exclusiveMaximum"));
    bool low = mn && (xmn ? d <= json_number_value(mn) : d < json_number_value(mn));
    bool high = mx && (xmx ? d >= json_number_value(mx) : d > json_number_value(mx));
    if (!low && !high) return;
    if (mn && mx)
        ag_v_fail(v, shown(path), "%s must be between %.15g and %.15g", shown(path),
                  json_number_value(mn), json_number_value(mx));
    else if (mn)
        ag_v_fail(v, shown(path), "%s must be at least %.15g", shown(path), json_number_value(mn));
    else
        ag_v_fail(v, shown(path), "%s must be at most %.15g", shown(path), json_number_value(mx));
}

static void check(ag_validator *v, const json_t *doc, const json_t *schema, const json_t *x,
                  const char *path)
{
    const json_t *s = deref(doc, schema);
    if (!s) return;
    if (json_is_null(x)) {
        const char *type = json_string_value(json_object_get(s, "type"));
        if (type && !json_is_true(json_object_get(s, "nullable")))
            ag_v_fail(v, shown(path), "%s must be %s, not null", shown(path), type_words(type));
        return;
    }
    const json_t *all = json_object_get(s, "allOf");
    size_t i;
    json_t *b;
    json_array_foreach (all, i, b)
        check(v, doc, b, x, path);
    const json_t *one = json_object_get(s, "oneOf");
    const json_t *any = json_object_get(s, "anyOf");
    const json_t *alts = one ? one : any;
    if (json_is_array(alts) && json_array_size(alts) > 0) {
        size_t passing = 0;
        json_array_foreach (alts, i, b)
            passing += problems(doc, b, x, path, NULL) == 0;
        bool ok = one ? passing == 1 : passing >= 1;
        if (!ok) {
            const json_t *named = named_branch(doc, alts, x);
            if (named && passing == 0)
                problems(doc, named, x, path, v);
            else
                ag_v_fail(v, shown(path), "%s matches %s of the forms it may take", shown(path),
                          passing == 0 ? "none" : "more than one");
        }
    }
    const json_t *not = json_object_get(s, "not");
    if (json_is_object(not) && problems(doc, not, x, path, NULL) == 0) {
        const json_t *ns = deref(doc, not);
        const json_t *ne = ns ? json_object_get(ns, "enum") : NULL;
        char *banned = json_array_size(ne) == 1
                        ? json_dumps(json_array_get(ne, 0), JSON_ENCODE_ANY | JSON_COMPACT)
                        : NULL;
        if (banned)
            ag_v_fail(v, shown(path), "%s must not be %s", shown(path), banned);
        else
            ag_v_fail(v, shown(path), "%s is a value that is not allowed here", shown(path));
        free(banned); /* jansson allocates with malloc */
    }
    const char *type = json_string_value(json_object_get(s, "type"));
    if (type && !type_ok(type, x)) {
        ag_v_fail(v, shown(path), "%s must be %s, not %s", shown(path), type_words(type),
                  kind_of(x));
        return;
    }
    const json_t *en = json_object_get(s, "enum");
    if (json_is_array(en)) {
        bool found = false;
        json_array_foreach (en, i, b)
            found = found || json_equal(b, (json_t *)x);
        if (!found) {
            char list[256] = "";
            size_t used = 0;
            json_array_foreach (en, i, b) {
                const char *t = json_string_value(b);
                if (!t || used + strlen(t) + 3 >= sizeof list) continue;
                used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", t);
            }
            ag_v_fail(v, shown(path), "%s must be one of %s", shown(path), list);
            return;
        }
    }
    if (json_is_object(x))
        check_object(v, doc, s, x, path);
    else if (json_is_array(x))
        check_array(v, doc, s, x, path);
    else if (json_is_string(x))
        check_string(v, s, x, path);
    else if (json_is_number(x))
        check_number(v, s, x, path);
}

void ag_schema_check(ag_validator *v, const json_t *doc, const json_t *schema,
                     const json_t *value)
{
    check(v, doc, schema, value, "");
}
