/*
 * routes.c — agora-catalog's HTTP API (services/catalog/README.md).
 *
 * Reads are public; creating and changing products and categories needs an
 * admin token; writing a review needs any verified caller. A soft-deleted
 * product (isActive false) is hidden from lists and answers 404 to everyone
 * but admins. Every change commits together with its event (events.c), and a
 * transaction function may run more than once (ag_store_tx retries on
 * conflicts), so each one starts by resetting what it returns.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"

#define MAX_PRICE_CENTS 100000000000LL /* one billion in major units */
#define MAX_STOCK 1000000000LL

/* ---- Helpers ---------------------------------------------------------------------- */

static void not_found(ag_http_res *res, const char *what)
{
    ag_res_error(res, 404, "NOT_FOUND", what, NULL);
}

static bool caller_is(const ag_http_req *req, const char *role)
{
    const ag_caller *me = ag_auth_caller(req);
    return me && strcmp(me->role, role) == 0;
}

/* -1 when absent, else 0 or 1. */
static int query_bool(ag_http_req *req, ag_validator *v, const char *name)
{
    const char *s = ag_req_query(req, name);
    if (!s) return -1;
    if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0) return 1;
    if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0) return 0;
    ag_v_fail(v, name, "%s must be true or false", name);
    return -1;
}

/* Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
 * Query strings and path segments are percent-decoded bytes; PostgreSQL
 * refuses malformed text, so it is turned away here as bad input. */
static bool utf8_ok(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned c = *s++;
        int more;
        unsigned min;
        if (c < 0x80) continue;
        if (c >= 0xC2 && c <= 0xDF) {
            more = 1, min = 0x80, c &= 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            more = 2, min = 0x800, c &= 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            more = 3, min = 0x10000, c &= 0x07;
        } else {
            return false;
        }
        for (int i = 0; i < more; i++, s++) {
            if ((*s & 0xC0) != 0x80) return false;
            c = (c << 6) | (*s & 0x3F);
        }
        if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return false;
    }
    return true;
}

/* Copies the path's product id into `out`; false (after answering 404)
 * when it cannot be one of ours: longer than an id, or not UTF-8. */
static bool path_id(ag_http_req *req, ag_http_res *res, char out[AG_ID_LEN + 1])
{
    const char *id = ag_req_param(req, "id");
    if (!id || strlen(id) > AG_ID_LEN || !utf8_ok(id)) {
        ag_res_error(res, 404, "NOT_FOUND", "no such product", NULL);
        return false;
    }
    memcpy(out, id, strlen(id) + 1);
    return true;
}

/* A text query parameter of at most `max` bytes, valid UTF-8; NULL when
 * absent or bad (recorded). */
static const char *query_text(ag_http_req *req, ag_validator *v, const char *name, size_t max)
{
    const char *s = ag_req_query(req, name);
    if (!s) return NULL;
    if (strlen(s) > max) {
        ag_v_fail(v, name, "%s must be at most %zu bytes", name, max);
        return NULL;
    }
    if (!utf8_ok(s)) {
        ag_v_fail(v, name, "%s must be UTF-8 text", name);
        return NULL;
    }
    return s;
}

static bool currency_ok(const char *s)
{
    for (int i = 0; i < 3; i++)
        if (s[i] < 'A' || s[i] > 'Z') return false;
    return s[3] == '\0';
}

/* Lower-case words of letters and digits joined by single hyphens. */
static bool slug_ok(const char *s)
{
    bool word = false;
    for (; *s; s++) {
        if ((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9')) {
            word = true;
        } else if (*s == '-' && word) {
            word = false;
        } else {
            return false;
        }
    }
    return word;
}

static bool blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r') return false;
    return true;
}

/* Every key of `body` must be one of `allowed` (NULL-terminated). */

/* The product fields of a POST (create: name, category and priceCents
 * required) or a PUT (every field optional, at least one). */
static void read_product(ag_validator *v, json_t *body, bool create, product_fields *f)
{
    static const char *const allowed[] = {"name",     "description", "category", "priceCents",
                                          "currency", "stock",       "isActive", NULL};
    memset(f, 0, sizeof *f);
    if (!ag_v_fields(v, body, allowed)) return;
    unsigned req = create ? AG_V_REQUIRED : 0;
    f->name = ag_v_str(v, body, "name", req, 1, 200);
    if (f->name && blank(f->name)) ag_v_fail(v, "name", "name must not be blank");
    f->description = ag_v_str(v, body, "description", 0, 0, 5000);
    f->category = ag_v_str(v, body, "category", req, 1, 64);
    long long x;
    if (ag_v_int(v, body, "priceCents", req, 0, MAX_PRICE_CENTS, &x)) {
        f->has_price = true;
        f->price_cents = x;
    }
    f->currency = ag_v_str(v, body, "currency", 0, 3, 3);
    if (f->currency && !currency_ok(f->currency))
        ag_v_fail(v, "currency", "currency must be three upper-case letters (ISO 4217)");
    if (ag_v_int(v, body, "stock", 0, 0, MAX_STOCK, &x)) {
        f->has_stock = true;
        f->stock = x;
    }
    f->has_active = ag_v_bool(v, body, "isActive", 0, &f->is_active);
    if (!create && json_object_size(body) == 0)
        ag_v_fail(v, "", "nothing to update: give at least one field");
}

/* ---- Products --------------------------------------------------------------------------- */

typedef struct product_ctx {
    char id[AG_ID_LEN + 1];
    product_fields f;
    json_t *product; /* the product after the change */
    bool bad_category;
    bool already_deleted;
} product_ctx;

static void product_ctx_reset(product_ctx *c)
{
    json_decref(c->product);
    c->product = NULL;
    c->bad_category = false;
    c->already_deleted = false;
}

static int check_category(ag_db *db, product_ctx *c)
{
    if (!c->f.category) return 0;
    int rc = categories_exists(db, c->f.category);
    if (rc < 0) return rc;
    if (rc == 0) {
        c->bad_category = true;
        return AG_EINVAL;
    }
    return 0;
}

static int create_tx(ag_db *db, void *ud)
{
    product_ctx *c = ud;
    product_ctx_reset(c);
    int rc = check_category(db, c);
    if (rc == 0) rc = products_insert(db, c->id, &c->f);
    if (rc == 0) rc = products_get(db, c->id, &c->product);
    if (rc == 0) rc = publish_product_event(db, "product.created", c->product);
    return rc;
}

static void unknown_category(ag_http_res *res, const char *slug)
{
    ag_validator v;
    ag_v_init(&v);
    ag_v_fail(&v, "category", "no category with slug \"%.64s\"", slug);
    ag_res_validation(res, &v);
}

static int update_tx(ag_db *db, void *ud)
{
    product_ctx *c = ud;
    product_ctx_reset(c);
    json_t *old;
    int rc = products_get(db, c->id, &old);
    if (rc < 0) return rc;
    int64_t old_price = json_integer_value(json_object_get(old, "priceCents"));
    char old_currency[8];
    snprintf(old_currency, sizeof old_currency, "%s",
             json_string_value(json_object_get(old, "currency")));
    json_decref(old);
    rc = check_category(db, c);
    if (rc == 0) rc = products_update(db, c->id, &c->f);
    if (rc == 0) rc = products_get(db, c->id, &c->product);
    if (rc == 0) rc = publish_product_event(db, "product.updated", c->product);
    if (rc < 0) return rc;
    int64_t new_price = json_integer_value(json_object_get(c->product, "priceCents"));
    const char *new_currency = json_string_value(json_object_get(c->product, "currency"));
    if (new_price != old_price || strcmp(new_currency, old_currency) != 0)
        rc = publish_price_updated(db, c->id, old_price, new_price, new_currency);
    return rc;
}

/* POST /v1/products (create) and PUT /v1/products/:id: the same body,
 * checked the same way, each in its own transaction. */
static void write_product(ag_http_req *req, ag_http_res *res, bool create)
{
    if (!ag_auth_caller_role(req, res, "admin")) return;
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    ag_validator v;
    ag_v_init(&v);
    product_ctx c;
    memset(&c, 0, sizeof c);
    read_product(&v, body, create, &c.f);
    if (!ag_v_passed(&v, res, body)) return;
    if (create) {
        ag_id_new_str(c.id);
    } else if (!path_id(req, res, c.id)) {
        json_decref(body);
        return;
    }
    int rc = ag_store_tx(g_catalog.store, create ? create_tx : update_tx, &c);
    if (rc == AG_ENOTFOUND && !create) {
        not_found(res, "no such product");
    } else if (rc < 0 && c.bad_category) {
        unknown_category(res, c.f.category);
    } else if (rc < 0) {
        ag_res_internal(req, res, create ? "create product failed" : "update product failed", rc);
    } else {
        ag_res_ok(res, create ? 201 : 200, json_incref(c.product));
    }
    product_ctx_reset(&c);
    json_decref(body);
}

static void post_product(ag_http_req *req, ag_http_res *res, void *ud)
{
    write_product(req, res, true);
}

static void put_product(ag_http_req *req, ag_http_res *res, void *ud)
{
    write_product(req, res, false);
}

static int delete_tx(ag_db *db, void *ud)
{
    product_ctx *c = ud;
    product_ctx_reset(c);
    json_t *old;
    int rc = products_get(db, c->id, &old);
    if (rc < 0) return rc;
    bool active = json_is_true(json_object_get(old, "isActive"));
    json_decref(old);
    if (!active) {
        c->already_deleted = true; /* deleting twice changes nothing */
        return 0;
    }
    rc = products_set_active(db, c->id, false);
    if (rc == 0) rc = products_get(db, c->id, &c->product);
    if (rc == 0) rc = publish_product_event(db, "product.deleted", c->product);
    return rc;
}

static void delete_product(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_role(req, res, "admin")) return;
    product_ctx c;
    memset(&c, 0, sizeof c);
    if (!path_id(req, res, c.id)) return;
    int rc = ag_store_tx(g_catalog.store, delete_tx, &c);
    if (rc == AG_ENOTFOUND)
        not_found(res, "no such product");
    else if (rc < 0)
        ag_res_internal(req, res, "delete product failed", rc);
    else
        ag_res_status(res, 204);
    product_ctx_reset(&c);
}

/* The product `id` as this caller may see it: NULL after answering 404
 * (missing, or soft-deleted and the caller no admin) or 500. */
static json_t *visible_product(ag_http_req *req, ag_http_res *res, ag_db *db, const char *id)
{
    json_t *p = NULL;
    int rc = utf8_ok(id) ? products_get(db, id, &p) : AG_ENOTFOUND;
    if (rc == 0 && !json_is_true(json_object_get(p, "isActive")) && !caller_is(req, "admin")) {
        json_decref(p);
        p = NULL;
        rc = AG_ENOTFOUND;
    }
    if (rc == AG_ENOTFOUND)
        not_found(res, "no such product");
    else if (rc < 0)
        ag_res_internal(req, res, "get product failed", rc);
    return p;
}

static void get_product(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_db *db;
    int rc = ag_store_db(g_catalog.store, &db);
    if (ag_res_rc(req, res, rc, NULL, "store unavailable")) return;
    json_t *p = visible_product(req, res, db, ag_req_param(req, "id"));
    if (p) ag_res_ok(res, 200, p);
}

static const struct {
    const char *name;
    product_sort sort;
} sorts[] = {
    {"newest", SORT_NEWEST},       {"-createdAt", SORT_NEWEST}, {"oldest", SORT_OLDEST},
    {"createdAt", SORT_OLDEST},    {"price", SORT_PRICE},       {"-price", SORT_PRICE_DESC},
    {"rating", SORT_RATING},       {"-rating", SORT_RATING},    {"name", SORT_NAME},
    {"relevance", SORT_RELEVANCE},
};

static void list_products(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_validator v;
    ag_v_init(&v);
    product_query q;
    memset(&q, 0, sizeof q);
    q.page = ag_v_query_int(&v, req, "page", 1, 1, 1000000);
    q.limit = ag_v_query_int(&v, req, "limit", 20, 1, 100);
    q.min_price = ag_v_query_int(&v, req, "minPrice", -1, 0, MAX_PRICE_CENTS);
    q.max_price = ag_v_query_int(&v, req, "maxPrice", -1, 0, MAX_PRICE_CENTS);
    if (q.min_price >= 0 && q.max_price >= 0 && q.min_price > q.max_price)
        ag_v_fail(&v, "minPrice", "minPrice must not exceed maxPrice");
    q.in_stock = query_bool(req, &v, "inStock");
    int inactive = query_bool(req, &v, "includeInactive");
    q.q = query_text(req, &v, "q", 200);
    if (q.q && blank(q.q)) q.q = NULL;
    q.category = query_text(req, &v, "category", 64);
    q.sort = q.q ? SORT_RELEVANCE : SORT_NEWEST;
    const char *sort = ag_req_query(req, "sort");
    if (sort) {
        size_t i;
        for (i = 0; i < sizeof sorts / sizeof sorts[0]; i++)
            if (strcmp(sort, sorts[i].name) == 0) break;
        if (i == sizeof sorts / sizeof sorts[0])
            ag_v_fail(&v, "sort",
                      "sort must be one of price, -price, newest, oldest, rating, "
                      "name, relevance");
        else
            q.sort = sorts[i].sort;
    }
    if (!ag_v_passed(&v, res, NULL)) return;
    if (inactive == 1) {
        /* Soft-deleted products are for admins only. */
        if (!ag_auth_caller_role(req, res, "admin")) return;
        q.include_inactive = true;
    }
    ag_db *db;
    json_t *arr = json_array();
    int64_t total = 0;
    int rc = ag_store_db(g_catalog.store, &db);
    if (rc == 0) rc = products_search(db, &q, arr, &total);
    ag_res_page_rc(req, res, rc, arr, q.page, q.limit, total, "product search failed");
}

static void get_recommendations(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_validator v;
    ag_v_init(&v);
    int64_t limit = ag_v_query_int(&v, req, "limit", 10, 1, 50);
    const char *user = query_text(req, &v, "userId", 128);
    if (user && !*user) ag_v_fail(&v, "userId", "userId must not be empty");
    if (!ag_v_passed(&v, res, NULL)) return;
    if (user) {
        /* What someone bought is theirs: recommendations drawn from it go to
         * that user, an admin or a service only. */
        const ag_caller *me = ag_auth_caller_required(req, res);
        if (!me) return;
        if (strcmp(me->id, user) != 0 && strcmp(me->role, "admin") != 0 &&
            strcmp(me->role, "service") != 0) {
            ag_res_error(res, 403, "FORBIDDEN", "recommendations for another user", NULL);
            return;
        }
    }
    ag_db *db;
    json_t *arr = json_array();
    int rc = ag_store_db(g_catalog.store, &db);
    if (rc == 0) rc = recommendations(db, user, limit, arr);
    if (rc < 0) {
        json_decref(arr);
        ag_res_internal(req, res, "recommendations failed", rc);
        return;
    }
    ag_res_ok(res, 200, arr);
}

/* ---- Categories --------------------------------------------------------------------------- */

static void list_categories(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_db *db;
    json_t *arr = json_array();
    int rc = ag_store_db(g_catalog.store, &db);
    if (rc == 0) rc = categories_list(db, arr);
    if (rc < 0) {
        json_decref(arr);
        ag_res_internal(req, res, "list categories failed", rc);
        return;
    }
    ag_res_ok(res, 200, arr);
}

typedef struct category_ctx {
    char id[AG_ID_LEN + 1];
    const char *name, *slug;
} category_ctx;

static int category_tx(ag_db *db, void *ud)
{
    category_ctx *c = ud;
    return categories_insert(db, c->id, c->name, c->slug);
}

static void post_category(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_auth_caller_role(req, res, "admin")) return;
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    static const char *const allowed[] = {"name", "slug", NULL};
    ag_validator v;
    ag_v_init(&v);
    category_ctx c;
    memset(&c, 0, sizeof c);
    if (ag_v_fields(&v, body, allowed)) {
        c.name = ag_v_str(&v, body, "name", AG_V_REQUIRED, 1, 100);
        if (c.name && blank(c.name)) ag_v_fail(&v, "name", "name must not be blank");
        c.slug = ag_v_str(&v, body, "slug", AG_V_REQUIRED, 1, 64);
        if (c.slug && !slug_ok(c.slug))
            ag_v_fail(&v, "slug",
                      "slug must be lower-case letters and digits, words joined by "
                      "single hyphens");
    }
    if (!ag_v_passed(&v, res, body)) return;
    ag_id_new_str(c.id);
    int rc = ag_store_tx(g_catalog.store, category_tx, &c);
    if (rc == AG_EEXISTS) {
        ag_res_error(res, 409, "CONFLICT", "a category with this name or slug exists", NULL);
    } else if (rc < 0) {
        ag_res_internal(req, res, "create category failed", rc);
    } else {
        ag_res_ok(res, 201,
                  json_pack("{s:s, s:s, s:s, s:I}", "id", c.id, "name", c.name, "slug", c.slug,
                            "productCount", (json_int_t)0));
    }
    json_decref(body);
}

/* ---- Reviews ----------------------------------------------------------------------------------
 */

typedef struct review_ctx {
    char id[AG_ID_LEN + 1];
    const char *product_id, *user_id, *text;
    int64_t rating;
    json_t *review;
    bool missing;
} review_ctx;

static int review_tx(ag_db *db, void *ud)
{
    review_ctx *c = ud;
    json_decref(c->review);
    c->review = NULL;
    c->missing = false;
    json_t *product;
    int rc = products_get(db, c->product_id, &product);
    if (rc == 0 && !json_is_true(json_object_get(product, "isActive"))) {
        json_decref(product);
        rc = AG_ENOTFOUND;
    } else if (rc == 0) {
        json_decref(product);
    }
    if (rc == AG_ENOTFOUND) c->missing = true;
    if (rc < 0) return rc;
    int bought = purchases_has(db, c->user_id, c->product_id);
    if (bought < 0) return bought;
    rc = reviews_insert(db, c->id, c->product_id, c->user_id, c->rating, c->text, bought == 1,
                        &c->review);
    if (rc == 0) rc = products_add_rating(db, c->product_id, c->rating);
    if (rc == 0) rc = products_get(db, c->product_id, &product);
    if (rc < 0) return rc;
    rc = publish_review_created(db, c->review, product);
    json_object_set(c->review, "productRating", json_object_get(product, "rating"));
    json_object_set(c->review, "reviewCount", json_object_get(product, "reviewCount"));
    json_decref(product);
    return rc;
}

static void post_review(ag_http_req *req, ag_http_res *res, void *ud)
{
    const ag_caller *me = ag_auth_caller_required(req, res);
    if (!me) return;
    json_t *body;
    if (ag_req_json(req, res, &body) < 0) return;
    static const char *const allowed[] = {"rating", "text", NULL};
    ag_validator v;
    ag_v_init(&v);
    review_ctx c;
    memset(&c, 0, sizeof c);
    long long rating = 0;
    if (ag_v_fields(&v, body, allowed)) {
        ag_v_int(&v, body, "rating", AG_V_REQUIRED, 1, 5, &rating);
        c.text = ag_v_str(&v, body, "text", 0, 0, 2000);
    }
    if (!ag_v_passed(&v, res, body)) return;
    char product_id[AG_ID_LEN + 1];
    if (!path_id(req, res, product_id)) {
        json_decref(body);
        return;
    }
    ag_id_new_str(c.id);
    c.product_id = product_id;
    c.user_id = me->id;
    c.rating = rating;
    if (!c.text) c.text = "";
    int rc = ag_store_tx(g_catalog.store, review_tx, &c);
    if (rc == AG_ENOTFOUND && c.missing)
        not_found(res, "no such product");
    else if (rc == AG_EEXISTS)
        ag_res_error(res, 409, "CONFLICT", "you have already reviewed this product", NULL);
    else if (rc < 0)
        ag_res_internal(req, res, "create review failed", rc);
    else
        ag_res_ok(res, 201, json_incref(c.review));
    json_decref(c.review);
    json_decref(body);
}

static void list_reviews(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_validator v;
    ag_v_init(&v);
    int64_t page = ag_v_query_int(&v, req, "page", 1, 1, 1000000);
    int64_t limit = ag_v_query_int(&v, req, "limit", 20, 1, 100);
    if (!ag_v_passed(&v, res, NULL)) return;
    ag_db *db;
    int rc = ag_store_db(g_catalog.store, &db);
    if (ag_res_rc(req, res, rc, NULL, "store unavailable")) return;
    const char *id = ag_req_param(req, "id");
    json_t *p = visible_product(req, res, db, id);
    if (!p) return;
    json_decref(p);
    json_t *arr = json_array();
    int64_t total = 0;
    rc = reviews_list(db, id, page, limit, arr, &total);
    ag_res_page_rc(req, res, rc, arr, page, limit, total, "list reviews failed");
}

/* ---- OpenAPI ----------------------------------------------------------------------------------
 */

void catalog_routes(ag_router *r)
{
    ag_router_add(r, "GET", "/v1/products", list_products, NULL, 0);
    ag_router_add(r, "POST", "/v1/products", post_product, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "GET", "/v1/products/recommendations", get_recommendations, NULL, 0);
    ag_router_add(r, "GET", "/v1/products/:id", get_product, NULL, 0);
    ag_router_add(r, "PUT", "/v1/products/:id", put_product, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "DELETE", "/v1/products/:id", delete_product, NULL, 0);
    ag_router_add(r, "GET", "/v1/products/:id/reviews", list_reviews, NULL, 0);
    ag_router_add(r, "POST", "/v1/products/:id/reviews", post_review, NULL, AG_ROUTE_JSON);
    ag_router_add(r, "GET", "/v1/categories", list_categories, NULL, 0);
    ag_router_add(r, "POST", "/v1/categories", post_category, NULL, AG_ROUTE_JSON);
}
