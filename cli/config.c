/*
 * config.c — config/agora.json: what `agora up` starts, in which order, on
 * which ports, with which environment (docs/internals/cli.md has the format).
 *
 * Strings in the file may hold placeholders, expanded here once:
 *   {port} {name}         the component's own port and name
 *   {var} {root} {build}  the var directory, the source tree, the build tree
 *   {users.port} {users.url}   another component's
 * "{service}" is left alone in the file and replaced by the component's name
 * in every environment value, the caller's AGORA_* variables included, so
 * AGORA_DB=postgres://…/agora_{service} gives each service its database.
 *
 * Environment of a component, later layers winning (12-factor, DESIGN §1):
 *   the caller's non-AGORA variables (PATH, HOME, …; never PORT)
 *   AGORA_REGISTRY (the registry component's URL, or "static" without one)
 *   AGORA_<NAME>_URL for every component (static discovery, the gateway)
 *   the file's "env", then the component's own "env"
 *   the caller's AGORA_* variables
 *   the caller's AGORA_<THIS>_X, also given as AGORA_X (per-service wins)
 *   PORT
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agora/config.h"
#include "agora/error.h"
#include "agora/mem.h"
#include "cli.h"

#ifndef AGORA_SOURCE_DIR
#define AGORA_SOURCE_DIR "."
#endif
#ifndef AGORA_BUILD_DIR
#define AGORA_BUILD_DIR "build"
#endif

extern char **environ;

/* ---- a "K=V" list where setting a key replaces it ---- */

typedef struct envlist {
    char **v;
    int n, cap;
} envlist;

static void env_set(envlist *e, const char *key, size_t klen, const char *val)
{
    for (int i = 0; i < e->n; i++) {
        if (strncmp(e->v[i], key, klen) == 0 && e->v[i][klen] == '=') {
            ag_free(e->v[i]);
            e->v[i] = NULL;
            ag_buf b;
            ag_buf_init(&b, 0);
            ag_buf_printf(&b, "%.*s=%s", (int)klen, key, val);
            e->v[i] = ag_buf_detach(&b, NULL);
            return;
        }
    }
    if (e->n + 2 > e->cap) {
        e->cap = e->cap ? e->cap * 2 : 64;
        e->v = ag_realloc(e->v, (size_t)e->cap * sizeof *e->v);
    }
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_buf_printf(&b, "%.*s=%s", (int)klen, key, val);
    e->v[e->n++] = ag_buf_detach(&b, NULL);
    e->v[e->n] = NULL;
}

static void free_strv(char **v)
{
    if (!v) return;
    for (char **p = v; *p; p++)
        ag_free(*p);
    ag_free(v);
}

/* ---- placeholders ---- */

typedef struct expand_ctx {
    const cli_config *cfg;
    json_t *comps; /* the file's component array, for {x.port} before load */
    int self;      /* index of the component, -1 for global strings */
} expand_ctx;

static json_t *find_comp_json(json_t *comps, const char *name, size_t len)
{
    size_t i;
    json_t *c;
    json_array_foreach(comps, i, c)
    {
        const char *n = json_string_value(json_object_get(c, "name"));
        if (n && strlen(n) == len && strncmp(n, name, len) == 0) return c;
    }
    return NULL;
}

static int comp_port(json_t *c)
{
    return (int)json_integer_value(json_object_get(c, "port"));
}

/* Expands `s` into a new string (*out, caller frees). AG_ENOTFOUND when it
 * names a component the file does not have; AG_EINVAL for an unknown
 * placeholder (the name is written to `bad`). */
static int expand(const expand_ctx *x, const char *s, char **out, char *bad, size_t badn)
{
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_buf_appends(&b, "");
    json_t *self = x->self >= 0 ? json_array_get(x->comps, (size_t)x->self) : NULL;
    while (*s) {
        const char *open = strchr(s, '{');
        const char *close = open ? strchr(open, '}') : NULL;
        if (!open || !close) {
            ag_buf_appends(&b, s);
            break;
        }
        ag_buf_append(&b, s, (size_t)(open - s));
        const char *k = open + 1;
        size_t klen = (size_t)(close - k);
        const char *dot = memchr(k, '.', klen);
#define IS(lit) (klen == sizeof(lit) - 1 && strncmp(k, lit, klen) == 0)
        if (IS("service")) {
            ag_buf_appends(&b, "{service}"); /* expanded per component later */
        } else if (IS("var")) {
            ag_buf_appends(&b, x->cfg->var);
        } else if (IS("root")) {
            ag_buf_appends(&b, x->cfg->root);
        } else if (IS("build")) {
            ag_buf_appends(&b, x->cfg->build);
        } else if (IS("port") && self) {
            ag_buf_printf(&b, "%d", comp_port(self));
        } else if (IS("name") && self) {
            ag_buf_appends(&b, json_string_value(json_object_get(self, "name")));
        } else if (dot) {
            json_t *c = find_comp_json(x->comps, k, (size_t)(dot - k));
            const char *attr = dot + 1;
            size_t alen = (size_t)(close - attr);
            if (!c) {
                snprintf(bad, badn, "%.*s", (int)klen, k);
                ag_buf_release(&b);
                return AG_ENOTFOUND;
            }
            if (alen == 4 && strncmp(attr, "port", 4) == 0) {
                ag_buf_printf(&b, "%d", comp_port(c));
            } else if (alen == 3 && strncmp(attr, "url", 3) == 0) {
                ag_buf_printf(&b, "http://127.0.0.1:%d", comp_port(c));
            } else {
                snprintf(bad, badn, "%.*s", (int)klen, k);
                ag_buf_release(&b);
                return AG_EINVAL;
            }
        } else {
            snprintf(bad, badn, "%.*s", (int)klen, k);
            ag_buf_release(&b);
            return AG_EINVAL;
        }
#undef IS
        s = close + 1;
    }
    *out = ag_buf_detach(&b, NULL);
    return 0;
}

/* Replaces every "{service}" in `s` with `name`; a new string. */
static char *with_service(const char *s, const char *name)
{
    ag_buf b;
    ag_buf_init(&b, 0);
    ag_buf_appends(&b, "");
    const char *p;
    while ((p = strstr(s, "{service}")) != NULL) {
        ag_buf_append(&b, s, (size_t)(p - s));
        ag_buf_appends(&b, name);
        s = p + strlen("{service}");
    }
    ag_buf_appends(&b, s);
    return ag_buf_detach(&b, NULL);
}

static void upper(char *out, size_t n, const char *name)
{
    size_t i = 0;
    for (; name[i] && i + 1 < n; i++)
        out[i] = name[i] == '-' ? '_' : (char)toupper((unsigned char)name[i]);
    out[i] = '\0';
}

static char *absolute(const char *root, const char *p)
{
    ag_buf b;
    ag_buf_init(&b, 0);
    if (p[0] == '/')
        ag_buf_appends(&b, p);
    else
        ag_buf_printf(&b, "%s/%s", root, p);
    return ag_buf_detach(&b, NULL);
}

/* Applies an "env" object of the file (expanded) to `e`. Variables that name
 * a component the file does not have are left out. */
static int apply_env_json(const expand_ctx *x, json_t *obj, envlist *e, const char *name)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (!json_is_string(v)) {
            fprintf(stderr, "agora: %s: env %s must be a string\n", x->cfg->path, k);
            return AG_ECONFIG;
        }
        char *val, bad[128];
        int rc = expand(x, json_string_value(v), &val, bad, sizeof bad);
        if (rc == AG_ENOTFOUND) continue;
        if (rc < 0) {
            fprintf(stderr, "agora: %s: env %s: unknown placeholder {%s}\n", x->cfg->path, k, bad);
            return AG_ECONFIG;
        }
        char *full = with_service(val, name);
        env_set(e, k, strlen(k), full);
        ag_free(full);
        ag_free(val);
    }
    return 0;
}

static int build_env(cli_config *cfg, const expand_ctx *x, json_t *root, json_t *jc,
                     const char *name, int port, char ***out)
{
    envlist e = {0};
    char up[64];
    upper(up, sizeof up, name);
    for (char **p = environ; *p; p++) {
        const char *eq = strchr(*p, '=');
        if (!eq || strncmp(*p, "AGORA_", 6) == 0 || strncmp(*p, "PORT=", 5) == 0) continue;
        env_set(&e, *p, (size_t)(eq - *p), eq + 1);
    }
    cli_component *reg = cli_config_find(cfg, "registry");
    char tmp[256];
    if (reg)
        snprintf(tmp, sizeof tmp, "http://127.0.0.1:%d", reg->port);
    else
        snprintf(tmp, sizeof tmp, "static");
    env_set(&e, "AGORA_REGISTRY", strlen("AGORA_REGISTRY"), tmp);
    for (int i = 0; i < cfg->n; i++) {
        char key[96], cu[64];
        upper(cu, sizeof cu, cfg->c[i].name);
        snprintf(key, sizeof key, "AGORA_%s_URL", cu);
        env_set(&e, key, strlen(key), cfg->c[i].url);
    }
    int rc = apply_env_json(x, json_object_get(root, "env"), &e, name);
    if (rc == 0 && jc) rc = apply_env_json(x, json_object_get(jc, "env"), &e, name);
    if (rc < 0) {
        free_strv(e.v);
        return rc;
    }
    /* The caller's AGORA_* variables, then its AGORA_<NAME>_X as AGORA_X. */
    char prefix[80];
    snprintf(prefix, sizeof prefix, "AGORA_%s_", up);
    for (int pass = 0; pass < 2; pass++) {
        for (char **p = environ; *p; p++) {
            const char *eq = strchr(*p, '=');
            if (!eq || strncmp(*p, "AGORA_", 6) != 0) continue;
            char *val = with_service(eq + 1, name);
            if (pass == 0) {
                env_set(&e, *p, (size_t)(eq - *p), val);
            } else if (strncmp(*p, prefix, strlen(prefix)) == 0 && eq > *p + strlen(prefix)) {
                /* AGORA_USERS_DB also as AGORA_DB; not AGORA_USERS_URL, which
                 * is the address of the service, not a setting of it. */
                const char *rest = *p + strlen(prefix);
                if (!(eq - rest == 3 && strncmp(rest, "URL", 3) == 0)) {
                    char key[128];
                    snprintf(key, sizeof key, "AGORA_%.*s", (int)(eq - rest), rest);
                    env_set(&e, key, strlen(key), val);
                }
            }
            ag_free(val);
        }
    }
    if (port > 0) {
        snprintf(tmp, sizeof tmp, "%d", port);
        env_set(&e, "PORT", 4, tmp);
    }
    *out = e.v;
    return 0;
}

static int duration(json_t *root, const char *key, uint64_t def, uint64_t *out, const char *path)
{
    json_t *v = json_object_get(root, key);
    *out = def;
    if (!v) return 0;
    if (json_is_integer(v)) {
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_string(v) && ag_parse_duration_ms(json_string_value(v), out) == 0) return 0;
    fprintf(stderr, "agora: %s: %s: expected a duration such as \"15s\"\n", path, key);
    return AG_ECONFIG;
}

static int load_component(cli_config *cfg, const expand_ctx *gx, json_t *comps, size_t i)
{
    json_t *jc = json_array_get(comps, i);
    cli_component *c = &cfg->c[cfg->n];
    const char *name = json_string_value(json_object_get(jc, "name"));
    const char *exec = json_string_value(json_object_get(jc, "exec"));
    json_t *port = json_object_get(jc, "port");
    if (!name || !*name || !exec || !json_is_integer(port) || json_integer_value(port) < 1 ||
        json_integer_value(port) > 65535) {
        fprintf(stderr,
                "agora: %s: component %zu needs \"name\", \"exec\" and \"port\" (1-65535)\n",
                cfg->path, i + 1);
        return AG_ECONFIG;
    }
    for (const char *p = name; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_') {
            fprintf(stderr, "agora: %s: component name \"%s\": letters, digits, - and _ only\n",
                    cfg->path, name);
            return AG_ECONFIG;
        }
    }
    if (cli_config_find(cfg, name)) {
        fprintf(stderr, "agora: %s: component \"%s\" listed twice\n", cfg->path, name);
        return AG_ECONFIG;
    }
    expand_ctx x = *gx;
    x.self = (int)i;
    char bad[128], *s;
    int rc = expand(&x, exec, &s, bad, sizeof bad);
    if (rc < 0) {
        fprintf(stderr, "agora: %s: %s: exec: unknown placeholder {%s}\n", cfg->path, name, bad);
        return AG_ECONFIG;
    }
    c->name = ag_strdup(name);
    c->port = (int)json_integer_value(port);
    if (strchr(s, '/')) {
        c->exec = absolute(cfg->root, s);
        ag_free(s);
    } else {
        c->exec = s; /* looked up on PATH */
    }
    const char *ready = json_string_value(json_object_get(jc, "ready"));
    if (ready && strcmp(ready, "tcp") == 0) {
        c->ready = CLI_READY_TCP;
    } else {
        c->ready = CLI_READY_HTTP;
        c->ready_path = ag_strdup(ready && ready[0] == '/' ? ready : "/ready");
    }
    const char *url = json_string_value(json_object_get(jc, "url"));
    if (url) {
        if (expand(&x, url, &c->url, bad, sizeof bad) < 0) c->url = ag_strdup(url);
    } else {
        ag_buf b;
        ag_buf_init(&b, 0);
        ag_buf_printf(&b, "http://127.0.0.1:%d", c->port);
        c->url = ag_buf_detach(&b, NULL);
    }
    json_t *args = json_object_get(jc, "args");
    size_t na = json_array_size(args);
    c->args = ag_calloc(na + 1, sizeof *c->args);
    cfg->n++; /* owned from here: release frees it on failure */
    for (size_t a = 0; a < na; a++) {
        const char *v = json_string_value(json_array_get(args, a));
        if (!v) {
            fprintf(stderr, "agora: %s: %s: args must be strings\n", cfg->path, name);
            return AG_ECONFIG;
        }
        if (expand(&x, v, &c->args[a], bad, sizeof bad) < 0) {
            fprintf(stderr, "agora: %s: %s: args: unknown placeholder {%s}\n", cfg->path, name,
                    bad);
            return AG_ECONFIG;
        }
    }
    return 0;
}

int cli_config_load(const cli_opts *o, cli_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    const char *root = getenv("AGORA_ROOT");
    cfg->root = ag_strdup(root && *root ? root : AGORA_SOURCE_DIR);
    const char *build = getenv("AGORA_BUILD");
    cfg->build = ag_strdup(build && *build ? build : AGORA_BUILD_DIR);
    const char *path = o->config ? o->config : getenv("AGORA_CONFIG");
    if (path && *path) {
        cfg->path = ag_strdup(path);
    } else {
        ag_buf b;
        ag_buf_init(&b, 0);
        ag_buf_printf(&b, "%s/config/agora.json", cfg->root);
        cfg->path = ag_buf_detach(&b, NULL);
    }
    json_error_t jerr;
    json_t *root_json = json_load_file(cfg->path, 0, &jerr);
    if (!root_json) {
        if (access(cfg->path, R_OK) != 0)
            fprintf(stderr, "agora: cannot read %s: %s\n", cfg->path, strerror(errno));
        else
            fprintf(stderr, "agora: %s:%d:%d: %s\n", cfg->path, jerr.line, jerr.column, jerr.text);
        cli_config_release(cfg);
        return AG_ECONFIG;
    }
    int rc = AG_ECONFIG;
    const char *var = o->var ? o->var : getenv("AGORA_VAR");
    if (!var || !*var) var = json_string_value(json_object_get(root_json, "var"));
    cfg->var = absolute(cfg->root, var && *var ? var : "var");
    if (duration(root_json, "readyTimeout", 30000, &cfg->ready_timeout_ms, cfg->path) < 0 ||
        duration(root_json, "drainTimeout", 15000, &cfg->drain_timeout_ms, cfg->path) < 0)
        goto out;
    json_t *comps = json_object_get(root_json, "components");
    if (!json_is_array(comps) || json_array_size(comps) == 0 ||
        json_array_size(comps) > CLI_MAX_COMPONENTS) {
        fprintf(stderr, "agora: %s: \"components\" must list 1 to %d components\n", cfg->path,
                CLI_MAX_COMPONENTS);
        goto out;
    }
    expand_ctx x = {.cfg = cfg, .comps = comps, .self = -1};
    for (size_t i = 0; i < json_array_size(comps); i++)
        if (load_component(cfg, &x, comps, i) < 0) goto out;
    for (int i = 0; i < cfg->n; i++) {
        x.self = i;
        if (build_env(cfg, &x, root_json, json_array_get(comps, (size_t)i), cfg->c[i].name,
                      cfg->c[i].port, &cfg->c[i].env) < 0)
            goto out;
    }
    json_t *demo = json_object_get(root_json, "demo");
    if (json_is_string(demo) && *json_string_value(demo)) {
        char *d, bad[128];
        x.self = -1;
        if (expand(&x, json_string_value(demo), &d, bad, sizeof bad) < 0) {
            fprintf(stderr, "agora: %s: demo: unknown placeholder {%s}\n", cfg->path, bad);
            goto out;
        }
        cfg->demo = absolute(cfg->root, d);
        ag_free(d);
        if (build_env(cfg, &x, root_json, NULL, "demo", 0, &cfg->demo_env) < 0) goto out;
    }
    rc = 0;
out:
    json_decref(root_json);
    if (rc < 0) cli_config_release(cfg);
    return rc;
}

void cli_config_release(cli_config *cfg)
{
    for (int i = 0; i < cfg->n; i++) {
        cli_component *c = &cfg->c[i];
        ag_free(c->name);
        ag_free(c->exec);
        free_strv(c->args);
        ag_free(c->ready_path);
        ag_free(c->url);
        free_strv(c->env);
    }
    ag_free(cfg->path);
    ag_free(cfg->root);
    ag_free(cfg->var);
    ag_free(cfg->build);
    ag_free(cfg->demo);
    free_strv(cfg->demo_env);
    memset(cfg, 0, sizeof *cfg);
}

cli_component *cli_config_find(cli_config *cfg, const char *name)
{
    for (int i = 0; i < cfg->n; i++)
        if (strcmp(cfg->c[i].name, name) == 0) return &cfg->c[i];
    return NULL;
}

void cli_path(const cli_config *cfg, char *out, size_t n, const char *sub, const char *name,
              const char *ext)
{
    if (name)
        snprintf(out, n, "%s/%s/%s%s", cfg->var, sub, name, ext ? ext : "");
    else
        snprintf(out, n, "%s/%s", cfg->var, sub);
}

const char *cli_rel(const cli_config *cfg, const char *path)
{
    size_t n = strlen(cfg->root);
    if (strncmp(path, cfg->root, n) == 0 && path[n] == '/') return path + n + 1;
    return path;
}

/* Whether `name` (no slash) is an executable on PATH. */
static bool on_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *end = strchr(path, ':');
        size_t len = end ? (size_t)(end - path) : strlen(path);
        char full[4096];
        snprintf(full, sizeof full, "%.*s/%s", (int)len, len ? path : ".", name);
        if (access(full, X_OK) == 0) return true;
        if (!end) break;
        path = end + 1;
    }
    return false;
}

int cli_check_executables(const cli_config *cfg)
{
    int rc = 0;
    for (int i = 0; i < cfg->n; i++) {
        const cli_component *c = &cfg->c[i];
        if (!strchr(c->exec, '/')) {
            if (!on_path(c->exec)) {
                fprintf(stderr, "agora: %s not found: run make deps\n", c->exec);
                rc = AG_ENOTFOUND;
            }
        } else if (access(c->exec, X_OK) != 0) {
            const char *base = strrchr(c->exec, '/') + 1;
            fprintf(stderr, "agora: %s not found at %s: run make build\n", base,
                    cli_rel(cfg, c->exec));
            rc = AG_ENOTFOUND;
        }
    }
    return rc;
}

const char *cli_config_env(const cli_config *cfg, const char *name)
{
    size_t n = strlen(name);
    for (char **e = cfg->n > 0 ? cfg->c[0].env : NULL; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
    return NULL;
}
