-- agora-orders: the order projection, its lines, the append-only history
-- it is rebuilt from, and the Idempotency-Key table. The saga's own row is
-- in agora_sagas (libagora's saga module), written in the same transactions.

-- The current state of each order: a projection of order_events, updated
-- in the transaction that appends the event (POST /v1/admin/orders/rebuild
-- recomputes it from the events alone).
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED', 'SHIPPED', 'DELIVERED',
                                           'CANCELLING', 'CANCELLED')),
    total_cents BIGINT NOT NULL CHECK (total_cents >= 0),
    currency TEXT NOT NULL,
    from_cart BIGINT NOT NULL DEFAULT 0,
    shipping_address TEXT NOT NULL,   -- JSON object
    payment_method TEXT NOT NULL,     -- JSON: type, brand and last four, or the wallet id
    payment_id TEXT,
    reason TEXT,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    version BIGINT NOT NULL,          -- the seq of the last event applied
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX orders_user ON orders (user_id, created_at);
CREATE INDEX orders_status ON orders (status, created_at);

CREATE TABLE order_items (
    order_id TEXT NOT NULL REFERENCES orders (id),
    product_id TEXT NOT NULL,
    name TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, product_id)
);

-- Everything that happened to an order, in order. Never updated or deleted.
CREATE TABLE order_events (
    order_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,               -- OrderPlaced, StockReserved, PaymentCharged, ...
    data TEXT NOT NULL,               -- JSON object
    actor TEXT,
    at TEXT NOT NULL,
    PRIMARY KEY (order_id, seq)
);

-- POST /v1/orders with an Idempotency-Key: the key per caller, the hash of
-- the request it came with, and the order it made.
CREATE TABLE idempotency_keys (
    user_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    order_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
);
