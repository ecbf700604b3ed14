/*
 * store.c — agora-catalog's SQL. Every value goes in as a parameter; the
 * only SQL built at run time is the product search, assembled from fixed
 * fragments (filters, the engine's full-text clause, an ORDER BY chosen
 * from a fixed list) with $n placeholders for every value.
 *
 * Full-text search differs per engine (schema/002_search.*): SQLite joins
 * the FTS5 table products_fts, PostgreSQL matches the generated tsvector
 * column products.search. Both get the same query: the words of ?q= (runs
 * of letters and digits; everything else separates words and is dropped, so
 * no search syntax from the client reaches either engine), each matched as a
 * prefix, all of them required.
 */
#include <ctype.h>
#include <string.h>

#include "catalog.h"

#define PRODUCT_COLS                                                                               \
    "p.id, p.name, p.description, p.category, p.price_cents, p.currency, p.stock,"                 \
    " p.rating_x10, p.review_count, p.is_active, p.created_at, p.updated_at"

#define MAX_SEARCH_WORDS 16

static bool is_sqlite(ag_db *db)
{
    return ag_store_engine_of(ag_db_store(db)) == AG_STORE_SQLITE;
}

static json_t *product_from_row(ag_rows *r)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:I, s:b, s:f, s:I, s:b, s:s, s:s}", "id",
                     ag_rows_text(r, 0), "name", ag_rows_text(r, 1), "description",
                     ag_rows_text(r, 2), "category", ag_rows_text(r, 3), "priceCents",
                     (json_int_t)ag_rows_int(r, 4), "currency", ag_rows_text(r, 5), "stock",
                     (json_int_t)ag_rows_int(r, 6), "inStock", ag_rows_int(r, 6) > 0, "rating",
                     (double)ag_rows_int(r, 7) / 10.0, "reviewCount", (json_int_t)ag_rows_int(r, 8),
                     "isActive", ag_rows_bool(r, 9), "createdAt", ag_rows_text(r, 10), "updatedAt",
                     ag_rows_text(r, 11));
}

/* Runs `sql` and appends every row, as a product, to `arr`. */
static int products_into(ag_db *db, const char *sql, const ag_val *p, int n, json_t *arr)
{
    ag_rows *r;
    int rc = ag_db_query(db, sql, p, n, &r);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(r)) == 1)
        json_array_append_new(arr, product_from_row(r));
    ag_rows_free(r);
    return rc < 0 ? rc : 0;
}

int products_insert(ag_db *db, const char *id, const product_fields *f)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(id),
                  AG_VTEXT(f->name),
                  AG_VTEXT(f->description ? f->description : ""),
                  AG_VTEXT(f->category),
                  AG_VINT(f->price_cents),
                  AG_VTEXT(f->currency ? f->currency : "USD"),
                  AG_VINT(f->has_stock ? f->stock : 0),
                  AG_VBOOL(f->has_active ? f->is_active : true),
                  AG_VTEXT(ts)};
    return ag_db_exec(db,
                      "INSERT INTO products (id, name, description, category, price_cents,"
                      " currency, stock, is_active, created_at, updated_at)"
                      " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                      p, 9, NULL);
}

static ag_val opt_text(const char *s)
{
    return s ? AG_VTEXT(s) : AG_VNULL;
}

int products_update(ag_db *db, const char *id, const product_fields *f)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    /* NULL keeps a column as it is. (AG_VNULL rather than AG_VTEXT(NULL):
     * libagora's PostgreSQL binding hands a NULL text to memchr.) */
    ag_val p[] = {opt_text(f->name),
                  opt_text(f->description),
                  opt_text(f->category),
                  f->has_price ? AG_VINT(f->price_cents) : AG_VNULL,
                  opt_text(f->currency),
                  f->has_stock ? AG_VINT(f->stock) : AG_VNULL,
                  f->has_active ? AG_VBOOL(f->is_active) : AG_VNULL,
                  AG_VTEXT(ts),
                  AG_VTEXT(id)};
    return ag_db_exec_changed(db,
                              "UPDATE products SET name = COALESCE($1, name),"
                              " description = COALESCE($2, description),"
                              " category = COALESCE($3, category),"
                              " price_cents = COALESCE($4, price_cents),"
                              " currency = COALESCE($5, currency), stock = COALESCE($6, stock),"
                              " is_active = COALESCE($7, is_active), updated_at = $8 WHERE id = $9",
                              p, 9, AG_ENOTFOUND);
}

int products_set_active(ag_db *db, const char *id, bool active)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VBOOL(active), AG_VTEXT(ts), AG_VTEXT(id)};
    return ag_db_exec_changed(db,
                              "UPDATE products SET is_active = $1, updated_at = $2 WHERE id = $3",
                              p, 3, AG_ENOTFOUND);
}

int products_get(ag_db *db, const char *id, json_t **out)
{
    json_t *arr = json_array();
    ag_val p = AG_VTEXT(id);
    int rc =
        products_into(db, "SELECT " PRODUCT_COLS " FROM products p WHERE p.id = $1", &p, 1, arr);
    if (rc == 0 && json_array_size(arr) == 0) rc = AG_ENOTFOUND;
    if (rc == 0) *out = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    return rc;
}

/* The words of `q` as the engine's full-text query; the number of words. */
static int search_query(const char *q, bool sqlite, ag_buf *out)
{
    int words = 0;
    const unsigned char *s = (const unsigned char *)q;
    while (*s && words < MAX_SEARCH_WORDS) {
        /* Letters, digits and every non-ASCII byte (UTF-8 letters) form words. */
        while (*s && !(isalnum(*s) || *s >= 0x80))
            s++;
        const unsigned char *start = s;
        while (*s && (isalnum(*s) || *s >= 0x80))
            s++;
        if (s == start) break;
        if (words > 0) ag_buf_appends(out, sqlite ? " " : " & ");
        ag_buf_appends(out, sqlite ? "\"" : "'");
        ag_buf_append(out, start, (size_t)(s - start));
        ag_buf_appends(out, sqlite ? "\"*" : "':*");
        words++;
    }
    return words;
}

int products_search(ag_db *db, const product_query *q, json_t *arr, int64_t *total)
{
    bool sqlite = is_sqlite(db);
    ag_val p[8];
    int n = 0;
    ag_buf from, fts;
    ag_buf_init(&from, 1 << 16);
    ag_buf_init(&fts, 4096);
    int fts_param = 0;
    if (q->q) {
        if (search_query(q->q, sqlite, &fts) == 0) {
            /* Nothing searchable (only punctuation): nothing matches. */
            ag_buf_release(&from);
            ag_buf_release(&fts);
            *total = 0;
            return 0;
        }
        const char *text = ag_buf_detach(&fts, NULL);
        ag_buf_release(&fts);
        p[n++] = AG_VTEXT(text);
        fts_param = n;
    }
    ag_buf_appends(&from, " FROM products p");
    if (fts_param && sqlite)
        ag_buf_printf(&from,
                      " JOIN (SELECT product_id, rank FROM products_fts WHERE products_fts"
                      " MATCH $%d) f ON f.product_id = p.id",
                      fts_param);
    ag_buf_appends(&from, " WHERE 1 = 1");
    if (fts_param && !sqlite)
        ag_buf_printf(&from, " AND p.search @@ to_tsquery('simple', $%d)", fts_param);
    if (!q->include_inactive) ag_buf_appends(&from, " AND p.is_active = TRUE");
    if (q->category) {
        p[n++] = AG_VTEXT(q->category);
        ag_buf_printf(&from, " AND p.category = $%d", n);
    }
    if (q->min_price >= 0) {
        p[n++] = AG_VINT(q->min_price);
        ag_buf_printf(&from, " AND p.price_cents >= $%d", n);
    }
    if (q->max_price >= 0) {
        p[n++] = AG_VINT(q->max_price);
        ag_buf_printf(&from, " AND p.price_cents <= $%d", n);
    }
    if (q->in_stock == 1) ag_buf_appends(&from, " AND p.stock > 0");
    if (q->in_stock == 0) ag_buf_appends(&from, " AND p.stock = 0");
    const char *where = from.data;

    ag_buf sql;
    ag_buf_init(&sql, 1 << 16);
    ag_buf_printf(&sql, "SELECT COUNT(*)%s", where);
    int rc = ag_db_query_int(db, sql.data, p, n, total);
    if (rc == 0) {
        ag_buf_release(&sql);
        ag_buf_init(&sql, 1 << 16);
        ag_buf_printf(&sql, "SELECT " PRODUCT_COLS "%s ORDER BY ", where);
        switch (q->sort) {
        case SORT_OLDEST:
            ag_buf_appends(&sql, "p.created_at, p.id");
            break;
        case SORT_PRICE:
            ag_buf_appends(&sql, "p.price_cents, p.id");
            break;
        case SORT_PRICE_DESC:
            ag_buf_appends(&sql, "p.price_cents DESC, p.id");
            break;
        case SORT_RATING:
            ag_buf_appends(&sql, "p.rating_x10 DESC, p.review_count DESC, p.id");
            break;
        case SORT_NAME:
            ag_buf_appends(&sql, "p.name, p.id");
            break;
        case SORT_RELEVANCE:
            if (fts_param && sqlite) {
                ag_buf_appends(&sql, "f.rank, p.id");
            } else if (fts_param) {
                ag_buf_printf(&sql, "ts_rank(p.search, to_tsquery('simple', $%d)) DESC, p.id",
                              fts_param);
            } else {
                ag_buf_appends(&sql, "p.created_at DESC, p.id DESC");
            }
            break;
        case SORT_NEWEST:
        default:
            ag_buf_appends(&sql, "p.created_at DESC, p.id DESC");
            break;
        }
        p[n++] = AG_VINT(q->limit);
        ag_buf_printf(&sql, " LIMIT $%d", n);
        p[n++] = AG_VINT((q->page - 1) * q->limit);
        ag_buf_printf(&sql, " OFFSET $%d", n);
        rc = products_into(db, sql.data, p, n, arr);
    }
    if (fts_param) ag_free((char *)p[fts_param - 1].v.s);
    ag_buf_release(&sql);
    ag_buf_release(&from);
    return rc;
}

int products_add_rating(ag_db *db, const char *id, int64_t stars)
{
    ag_val key = AG_VTEXT(id);
    ag_rows *r;
    int rc =
        ag_db_query(db, "SELECT rating_sum, review_count FROM products WHERE id = $1", &key, 1, &r);
    if (rc < 0) return rc;
    int64_t sum = 0, count = 0;
    rc = ag_rows_next(r);
    if (rc == 1) {
        sum = ag_rows_int(r, 0);
        count = ag_rows_int(r, 1);
        rc = 0;
    } else if (rc == 0) {
        rc = AG_ENOTFOUND;
    }
    ag_rows_free(r);
    if (rc < 0) return rc;
    sum += stars;
    count += 1;
    /* The average to one decimal, rounded half up: round(10 * sum / count). */
    int64_t x10 = (20 * sum + count) / (2 * count);
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VINT(sum), AG_VINT(count), AG_VINT(x10), AG_VTEXT(ts), AG_VTEXT(id)};
    return ag_db_exec(db,
                      "UPDATE products SET rating_sum = $1, review_count = $2, rating_x10 = $3,"
                      " updated_at = $4 WHERE id = $5",
                      p, 5, NULL);
}

int categories_insert(ag_db *db, const char *id, const char *name, const char *slug)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(id), AG_VTEXT(name), AG_VTEXT(slug), AG_VTEXT(ts)};
    return ag_db_exec(db,
                      "INSERT INTO categories (id, name, slug, created_at) VALUES ($1, $2, $3, $4)",
                      p, 4, NULL);
}

int categories_exists(ag_db *db, const char *slug)
{
    ag_val p = AG_VTEXT(slug);
    int64_t n = 0;
    int rc = ag_db_query_int(db, "SELECT COUNT(*) FROM categories WHERE slug = $1", &p, 1, &n);
    return rc < 0 ? rc : n > 0;
}

int categories_list(ag_db *db, json_t *arr)
{
    ag_rows *r;
    int rc = ag_db_query(db,
                         "SELECT c.id, c.name, c.slug, c.created_at,"
                         " (SELECT COUNT(*) FROM products p WHERE p.category = c.slug"
                         " AND p.is_active = TRUE)"
                         " FROM categories c ORDER BY c.name, c.id",
                         NULL, 0, &r);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(r)) == 1)
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:I}", "id", ag_rows_text(r, 0),
                                             "name", ag_rows_text(r, 1), "slug", ag_rows_text(r, 2),
                                             "createdAt", ag_rows_text(r, 3), "productCount",
                                             (json_int_t)ag_rows_int(r, 4)));
    ag_rows_free(r);
    return rc < 0 ? rc : 0;
}

#define REVIEW_COLS "id, product_id, user_id, rating, text, verified_purchase, created_at"

static json_t *review_from_row(ag_rows *r)
{
    return json_pack("{s:s, s:s, s:s, s:I, s:s, s:b, s:s}", "id", ag_rows_text(r, 0), "productId",
                     ag_rows_text(r, 1), "userId", ag_rows_text(r, 2), "rating",
                     (json_int_t)ag_rows_int(r, 3), "text", ag_rows_text(r, 4), "verifiedPurchase",
                     ag_rows_bool(r, 5), "createdAt", ag_rows_text(r, 6));
}

int reviews_insert(ag_db *db, const char *id, const char *product_id, const char *user_id,
                   int64_t rating, const char *text, bool verified, json_t **out)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(id),   AG_VTEXT(product_id), AG_VTEXT(user_id), AG_VINT(rating),
                  AG_VTEXT(text), AG_VBOOL(verified),   AG_VTEXT(ts)};
    int rc =
        ag_db_exec(db, "INSERT INTO reviews (" REVIEW_COLS ") VALUES ($1, $2, $3, $4, $5, $6, $7)",
                   p, 7, NULL);
    if (rc < 0) return rc;
    *out = json_pack("{s:s, s:s, s:s, s:I, s:s, s:b, s:s}", "id", id, "productId", product_id,
                     "userId", user_id, "rating", (json_int_t)rating, "text", text,
                     "verifiedPurchase", verified, "createdAt", ts);
    return 0;
}

int reviews_list(ag_db *db, const char *product_id, int64_t page, int64_t limit, json_t *arr,
                 int64_t *total)
{
    ag_val p[] = {AG_VTEXT(product_id), AG_VINT(limit), AG_VINT((page - 1) * limit)};
    int rc = ag_db_query_int(db, "SELECT COUNT(*) FROM reviews WHERE product_id = $1", p, 1, total);
    if (rc < 0) return rc;
    ag_rows *r;
    rc = ag_db_query(db,
                     "SELECT " REVIEW_COLS " FROM reviews WHERE product_id = $1"
                     " ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
                     p, 3, &r);
    if (rc < 0) return rc;
    while ((rc = ag_rows_next(r)) == 1)
        json_array_append_new(arr, review_from_row(r));
    ag_rows_free(r);
    return rc < 0 ? rc : 0;
}

int purchases_record(ag_db *db, const char *order_id, const char *user_id, const char *product_id,
                     int64_t quantity)
{
    char ts[32];
    ag_time_now(ts, sizeof ts);
    ag_val p[] = {AG_VTEXT(order_id), AG_VTEXT(user_id), AG_VTEXT(product_id), AG_VINT(quantity),
                  AG_VTEXT(ts)};
    /* An order naming a product twice counts once, with both quantities. */
    int rc = ag_db_exec(db,
                        "INSERT INTO purchases (order_id, user_id, product_id, quantity,"
                        " confirmed_at) VALUES ($1, $2, $3, $4, $5)"
                        " ON CONFLICT (order_id, product_id)"
                        " DO UPDATE SET quantity = purchases.quantity + excluded.quantity",
                        p, 5, NULL);
    if (rc < 0) return rc;
    /* A review written before the order was confirmed becomes verified. */
    ag_val q[] = {AG_VTEXT(user_id), AG_VTEXT(product_id)};
    return ag_db_exec(db,
                      "UPDATE reviews SET verified_purchase = TRUE"
                      " WHERE user_id = $1 AND product_id = $2",
                      q, 2, NULL);
}

int purchases_has(ag_db *db, const char *user_id, const char *product_id)
{
    ag_val p[] = {AG_VTEXT(user_id), AG_VTEXT(product_id)};
    int64_t n = 0;
    int rc = ag_db_query_int(
        db, "SELECT COUNT(*) FROM purchases WHERE user_id = $1 AND product_id = $2", p, 2, &n);
    return rc < 0 ? rc : n > 0;
}

/* Appends the rows of `sql` not yet in `arr` (by id), tagged with `reason`,
 * until `arr` holds `limit`. */
static int append_unique(ag_db *db, const char *sql, const ag_val *p, int n, json_t *arr,
                         int64_t limit, const char *reason)
{
    json_t *rows = json_array();
    int rc = products_into(db, sql, p, n, rows);
    size_t i;
    json_t *prod;
    json_array_foreach(rows, i, prod)
    {
        if (rc < 0 || (int64_t)json_array_size(arr) >= limit) break;
        const char *id = json_string_value(json_object_get(prod, "id"));
        bool seen = false;
        size_t j;
        json_t *have;
        json_array_foreach(arr, j, have)
        {
            if (strcmp(json_string_value(json_object_get(have, "id")), id) == 0) seen = true;
        }
        if (seen) continue;
        json_object_set_new(prod, "reason", json_string(reason));
        json_array_append(arr, prod);
    }
    json_decref(rows);
    return rc;
}

int recommendations(ag_db *db, const char *user_id, int64_t limit, json_t *arr)
{
    int rc = 0;
    if (user_id) {
        /* Products in the orders (anyone's) that contain something this user
         * bought, which the user has not bought, most often together first. */
        ag_val p[] = {AG_VTEXT(user_id), AG_VINT(limit)};
        rc = append_unique(db,
                           "SELECT " PRODUCT_COLS " FROM products p JOIN ("
                           " SELECT other.product_id AS pid, COUNT(DISTINCT other.order_id) AS n"
                           " FROM purchases mine"
                           " JOIN purchases same ON same.product_id = mine.product_id"
                           " JOIN purchases other ON other.order_id = same.order_id"
                           "  AND other.product_id <> same.product_id"
                           " WHERE mine.user_id = $1 AND other.product_id NOT IN"
                           "  (SELECT product_id FROM purchases WHERE user_id = $1)"
                           " GROUP BY other.product_id) t ON t.pid = p.id"
                           " WHERE p.is_active = TRUE"
                           " ORDER BY t.n DESC, p.rating_x10 DESC, p.id LIMIT $2",
                           p, 2, arr, limit, "boughtTogether");
    }
    if (rc == 0 && (int64_t)json_array_size(arr) < limit) {
        /* Then the best rated, leaving out what the user already bought. */
        ag_val p[] = {AG_VTEXT(user_id ? user_id : ""), AG_VINT(2 * limit)};
        rc = append_unique(db,
                           "SELECT " PRODUCT_COLS " FROM products p WHERE p.is_active = TRUE"
                           " AND p.id NOT IN (SELECT product_id FROM purchases WHERE user_id = $1)"
                           " ORDER BY p.rating_x10 DESC, p.review_count DESC, p.created_at DESC,"
                           " p.id LIMIT $2",
                           p, 2, arr, limit, "topRated");
    }
    return rc;
}
