/*
 * notesd — a small service wired the way every Agora service will be: its
 * own store with migrations, the event bus, a publisher and a consumer of
 * its own events. The integration tests drive it over HTTP against a real
 * broker (tests/integration/service/test_notes.py).
 *
 *   POST /v1/notes {"text"}  stores a note and publishes notes.created
 *   GET  /v1/notes/:id       the note, or 404
 *   GET  /v1/stats           {"notes": rows, "seen": notes.created handled}
 * Environment: NOTES_SCHEMA (the migrations directory), AGORA_DB, AGORA_BUS.
 */
#include <stdlib.h>

#include "agora/agora.h"
#include "agora/bus.h"
#include "agora/store.h"

static ag_store *g_store;
static ag_bus *g_bus;

typedef struct create_ctx {
    const char *text;
    char id[AG_ID_LEN + 1];
} create_ctx;

static int create_note(ag_db *db, void *ud)
{
    create_ctx *c = ud;
    char ts[32];
    ag_time_rfc3339(ts, sizeof ts, ag_wall_ms());
    ag_val p[] = {AG_VTEXT(c->id), AG_VTEXT(c->text), AG_VTEXT(ts)};
    int rc = ag_db_exec(db, "INSERT INTO notes (id, text, created_at) VALUES ($1, $2, $3)", p, 3,
                        NULL);
    if (rc < 0) return rc;
    return ag_bus_publish(g_bus, db, "notes.created", c->id,
                          json_pack("{s:s, s:s}", "id", c->id, "text", c->text), NULL);
}

static void post_note(ag_http_req *req, ag_http_res *res, void *ud)
{
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    ag_validator v;
    ag_v_init(&v);
    const char *text = ag_v_str(&v, body, "text", AG_V_REQUIRED, 1, 200);
    if (!ag_v_ok(&v)) {
        ag_res_validation(res, &v);
        json_decref(body);
        return;
    }
    ag_v_release(&v);
    create_ctx c = {.text = text};
    ag_id_new_str(c.id);
    int rc = ag_store_tx(g_store, create_note, &c);
    json_decref(body);
    if (rc < 0) {
        ag_error("cannot create a note", AG_FERR(rc), AG_FS("requestId", ag_req_id(req)));
        ag_res_error(res, 500, "INTERNAL", "internal error", NULL);
        return;
    }
    ag_res_ok(res, 201, json_pack("{s:s}", "id", c.id));
}

static void get_note(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_db *db;
    if (ag_store_db(g_store, &db) < 0) {
        ag_res_error(res, 503, "UNAVAILABLE", "store unavailable", NULL);
        return;
    }
    ag_val id = AG_VTEXT(ag_req_param(req, "id"));
    ag_rows *r;
    if (ag_db_query(db, "SELECT id, text, created_at FROM notes WHERE id = $1", &id, 1, &r) < 0) {
        ag_res_error(res, 500, "INTERNAL", "internal error", NULL);
        return;
    }
    if (ag_rows_next(r) == 1)
        ag_res_ok(res, 200, json_pack("{s:s, s:s, s:s}", "id", ag_rows_text(r, 0), "text",
                                      ag_rows_text(r, 1), "createdAt", ag_rows_text(r, 2)));
    else
        ag_res_error(res, 404, "NOT_FOUND", "no such note", NULL);
    ag_rows_free(r);
}

static void stats(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_db *db;
    int64_t notes = 0, seen = 0;
    if (ag_store_db(g_store, &db) < 0 ||
        ag_db_query_int(db, "SELECT COUNT(*) FROM notes", NULL, 0, &notes) < 0 ||
        ag_db_query_int(db, "SELECT COUNT(*) FROM seen", NULL, 0, &seen) < 0) {
        ag_res_error(res, 500, "INTERNAL", "internal error", NULL);
        return;
    }
    ag_res_ok(res, 200, json_pack("{s:I, s:I}", "notes", (json_int_t)notes, "seen", (json_int_t)seen));
}

static int on_note_created(ag_db *db, const ag_event *ev, void *ud, char *why, size_t n)
{
    const char *note = json_string_value(json_object_get(ev->data, "id"));
    if (!note) {
        snprintf(why, n, "notes.created without data.id");
        return AG_EINVAL;
    }
    ag_val p[] = {AG_VTEXT(ev->id), AG_VTEXT(note)};
    return ag_db_exec(db, "INSERT INTO seen (event_id, note_id) VALUES ($1, $2)", p, 2, NULL);
}

int main(void)
{
    ag_service *svc;
    if (ag_service_new("notes", 0, &svc) < 0) return 1;
    const char *schema = getenv("NOTES_SCHEMA");
    if (ag_service_use_store(svc, schema, &g_store) < 0 || ag_service_use_bus(svc, &g_bus) < 0) {
        ag_service_free(svc);
        return 1;
    }
    ag_bus_subscribe(g_bus, "notes.created", on_note_created, NULL);
    ag_router *r = ag_service_router(svc);
    ag_router_add(r, "POST", "/v1/notes", post_note, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "GET", "/v1/notes/:id", get_note, NULL, 0);
    ag_router_add(r, "GET", "/v1/stats", stats, NULL, 0);
    int rc = ag_service_run(svc);
    ag_service_free(svc);
    return rc == 0 ? 0 : 1;
}
