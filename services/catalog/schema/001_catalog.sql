-- agora-catalog: categories, products, reviews and the purchases it learns
-- from order.confirmed. Full-text search is engine-specific (002_search.*).
CREATE TABLE categories (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    slug TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE products (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL REFERENCES categories (slug),
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    currency TEXT NOT NULL,
    stock BIGINT NOT NULL DEFAULT 0 CHECK (stock >= 0),
    rating_sum BIGINT NOT NULL DEFAULT 0,
    review_count BIGINT NOT NULL DEFAULT 0,
    rating_x10 BIGINT NOT NULL DEFAULT 0,   -- the average, times ten, rounded
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX products_category ON products (category, is_active);
CREATE INDEX products_price ON products (price_cents);
CREATE INDEX products_created ON products (created_at);
CREATE TABLE reviews (
    id TEXT PRIMARY KEY,
    product_id TEXT NOT NULL REFERENCES products (id),
    user_id TEXT NOT NULL,
    rating BIGINT NOT NULL CHECK (rating BETWEEN 1 AND 5),
    text TEXT NOT NULL DEFAULT '',
    verified_purchase BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TEXT NOT NULL,
    UNIQUE (product_id, user_id)
);
CREATE INDEX reviews_product ON reviews (product_id, created_at);
-- One row per product of a confirmed order (order.confirmed), for
-- verifiedPurchase and bought-together recommendations.
CREATE TABLE purchases (
    order_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    confirmed_at TEXT NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX purchases_user ON purchases (user_id, product_id);
CREATE INDEX purchases_product ON purchases (product_id);
