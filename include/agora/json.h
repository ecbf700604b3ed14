/*
 * json.h — JSON request bodies and validation, on jansson.
 *
 * ag_req_json parses a request body, answering 415 (not JSON) or 400
 * (malformed, with line and column) itself. An ag_validator collects every
 * problem with a body's fields; ag_res_validation answers 422 with the
 * error envelope of DESIGN.md §4, the first problem as the message and all
 * of them in details: [{"field": "email", "message": "email is required"}].
 * ag_res_page answers a page of a list with §4's pagination envelope.
 *
 *   json_t *body;
 *   if (ag_req_json(req, res, &body) < 0) return;        // answered
 *   ag_validator v; ag_v_init(&v);
 *   const char *email = ag_v_str(&v, body, "email", AG_V_REQUIRED, 3, 254);
 *   long long qty = 1; ag_v_int(&v, body, "quantity", 0, 1, 100, &qty);
 *   if (!ag_v_passed(&v, res, body)) return;             // 422 answered, body dropped
 */
#ifndef AGORA_JSON_H
#define AGORA_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agora/http.h"

/* Parses the body into a new reference (*out, the caller's). When the body is
 * not JSON, answers 415 or 400 and returns AG_EINVAL. An empty body is 400.
 * A spooled body (AG_ROUTE_SPOOL) is read from its file, never whole. */
int ag_req_json(ag_http_req *req, ag_http_res *res, json_t **out);
/* The same parse, answering nothing: 0 with *out (the caller's),
 * AG_ENOTFOUND for an empty body, AG_EINVAL with `err` filled for one that
 * is not JSON (an object or an array, no duplicate keys). */
int ag_req_json_parse(const ag_http_req *req, json_t **out, json_error_t *err);

enum { AG_V_REQUIRED = 1 << 0, AG_V_NULLABLE = 1 << 1 };

typedef struct ag_validator {
    json_t *details; /* array of {"field","message"}; owned */
    char first[256]; /* the first message */
} ag_validator;

void ag_v_init(ag_validator *v);
void ag_v_release(ag_validator *v);
bool ag_v_ok(const ag_validator *v);
/* Records a problem with `field` (printf-style message). */
void ag_v_fail(ag_validator *v, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Each getter checks obj[field] and returns the value (borrowed from `obj`),
 * or NULL/false after recording a problem. An absent optional field returns
 * NULL/false and records nothing. Lengths count UTF-8 code points. */
const char *ag_v_str(ag_validator *v, json_t *obj, const char *field, unsigned flags,
                     size_t min_len, size_t max_len);
bool ag_v_int(ag_validator *v, json_t *obj, const char *field, unsigned flags, long long min,
              long long max, long long *out);
bool ag_v_bool(ag_validator *v, json_t *obj, const char *field, unsigned flags, bool *out);
json_t *ag_v_object(ag_validator *v, json_t *obj, const char *field, unsigned flags);
json_t *ag_v_array(ag_validator *v, json_t *obj, const char *field, unsigned flags,
                   size_t min_items, size_t max_items);
/* A string that looks like an e-mail address (one '@', a dot in the domain,
 * no spaces, at most 254 characters). */
const char *ag_v_email(ag_validator *v, json_t *obj, const char *field, unsigned flags);

/* Records a problem for every member of object `obj` not named in
 * `allowed` (NULL-terminated): "<prefix><name> is not a known field".
 * `prefix` (may be NULL) names the object in nested bodies ("items[].").
 * A body's unknown fields are refused rather than ignored (DESIGN.md §4). */
void ag_v_only_fields(ag_validator *v, json_t *obj, const char *prefix, const char *const *allowed);

/* The body's shape before its fields: records "the body must be a JSON
 * object" or, for an object, each field not in `allowed` (NULL: any);
 * true when `obj` is an object, whose fields the caller then reads:
 *   if (ag_v_fields(&v, body, allowed)) { name = ag_v_str(&v, body, ...); } */
bool ag_v_fields(ag_validator *v, json_t *obj, const char *const *allowed);

/* An integer of at least `min` given as a JSON integer or as a decimal
 * string (how ids too large for JavaScript's numbers travel): true with
 * *out, false for anything else. */
bool ag_json_int_of(const json_t *v, int64_t min, int64_t *out);

/* The query parameter `name` of `req` as an integer in [min, max]: its
 * value, `def` when absent, or `def` after recording "<name> must be an
 * integer between <min> and <max>". */
int64_t ag_v_query_int(ag_validator *v, ag_http_req *req, const char *name, int64_t def,
                       int64_t min, int64_t max);

/* Checks `value` against `schema`, an OpenAPI 3.0 Schema Object whose
 * "$ref"s ("#/components/schemas/X") are resolved in `doc` (the whole
 * document), and records every problem in `v`, each under its path
 * ("name", "items[0].quantity"; "the body" for the value itself). The
 * subset read is listed in schema.c. The framework runs it on every route
 * whose OpenAPI operation has an application/json requestBody schema,
 * before the handler (docs/internals/service.md). */
void ag_schema_check(ag_validator *v, const json_t *doc, const json_t *schema, const json_t *value);

/* The body as a JSON object (a new reference, the caller's) with `v`
 * initialised: NULL when ag_req_json answered (400, 415). A body that is
 * not an object, or has a field not named in `allowed` (NULL-terminated;
 * NULL: any), is recorded in `v` and still returned, so that the caller
 * checks its own fields and answers every problem at once. */
json_t *ag_req_json_object(ag_http_req *req, ag_http_res *res, ag_validator *v,
                           const char *const *allowed);

/* The §4 page of a list from ?page= (1 to 1000000, default 1) and
 * ?limit= (1 to `max_limit`, default `def_limit`): true, or false after
 * answering 422 VALIDATION_FAILED naming the bad parameter. */
bool ag_req_page(ag_http_req *req, ag_http_res *res, int64_t def_limit, int64_t max_limit,
                 int64_t *page, int64_t *limit);

/* Answers 422 VALIDATION_FAILED with the collected problems, and releases
 * the validator. */
void ag_res_validation(ag_http_res *res, ag_validator *v);

/* The end of a handler's checks: true when `v` holds no problem (`v`
 * released, `body` untouched); false after answering 422 with them and
 * dropping `body` (may be NULL), so the handler only returns. */
bool ag_v_passed(ag_validator *v, ag_http_res *res, json_t *body);

/* The list envelope of DESIGN.md §4, as a new object (the caller's):
 *   {"success":true,"data":data,"pagination":{"page","limit","total","pages"}}
 * with pages = ceil(total / limit); `limit` must be at least 1 (the routes'
 * validation sees to it). `data` is stolen, on failure too. A service that
 * adds top-level fields (notifications' unreadCount) sets them on the result
 * and answers with ag_res_json. */
json_t *ag_page_envelope(json_t *data, int64_t page, int64_t limit, int64_t total);

/* Answers 200 with ag_page_envelope(data, page, limit, total); `data` is
 * stolen. */
void ag_res_page(ag_http_res *res, json_t *data, int64_t page, int64_t limit, int64_t total);

/* The end of a list route: the page (ag_res_page) when rc >= 0, else
 * `data` dropped and ag_res_internal(`what`). `data` is stolen. */
void ag_res_page_rc(ag_http_req *req, ag_http_res *res, int rc, json_t *data, int64_t page,
                    int64_t limit, int64_t total, const char *what);

/* Answers 500 INTERNAL ("internal error", nothing more: STYLE.md, the
 * client gets the envelope and the request id) and logs `what` with the
 * error code and the request id for whoever reads the logs. */
void ag_res_internal(ag_http_req *req, ag_http_res *res, const char *what, int rc);

/* The answer to a store call's result: false for rc >= 0 (nothing sent);
 * otherwise true after answering 404 NOT_FOUND with `not_found` for
 * AG_ENOTFOUND (when `not_found` is not NULL) or ag_res_internal(`what`):
 *   if (ag_res_rc(req, res, rc, "no such room", "room lookup failed")) return; */
bool ag_res_rc(ag_http_req *req, ag_http_res *res, int rc, const char *not_found, const char *what);

#endif
