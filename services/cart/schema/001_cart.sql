-- agora-cart: one row per line of a user's cart. name, price_cents and
-- currency are the snapshot of the product as catalog last described it
-- (when the line was added or updated, or the cart read); GET /v1/cart shows
-- catalog's current price and falls back to this snapshot, marked stale,
-- when catalog cannot answer.
CREATE TABLE cart_items (
    user_id TEXT NOT NULL,
    product_id TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    name TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    currency TEXT NOT NULL,
    priced_at TEXT NOT NULL,
    added_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (user_id, product_id)
);
CREATE INDEX cart_items_user ON cart_items (user_id, added_at);
