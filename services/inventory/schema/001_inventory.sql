-- agora-inventory: stock per product, reservations per order, and an audit
-- of manual adjustments. Invariants kept by the CHECKs as well as by the
-- conditional UPDATEs of store.c: 0 <= reserved <= quantity, so available
-- (quantity - reserved) is never negative.
CREATE TABLE stock (
    product_id TEXT PRIMARY KEY,
    quantity BIGINT NOT NULL CHECK (quantity >= 0),
    reserved BIGINT NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= quantity),
    low_stock_level BIGINT NOT NULL DEFAULT 5 CHECK (low_stock_level >= 0),
    location TEXT NOT NULL DEFAULT 'main',
    -- 1 once inventory.low_stock went out for the current crossing; back to
    -- 0 when available rises above low_stock_level again.
    low_alerted BIGINT NOT NULL DEFAULT 0,
    -- 1 after product.deleted: nothing more can be reserved.
    deleted BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- One row per order id: RESERVED, COMMITTED, RELEASED, or FAILED (a refused
-- reservation, kept so that a repeat gets the same answer). items_key is the
-- canonical form of the request ("id:qty,id:qty" sorted by product id) that
-- a repeat is compared with; shortages the 409's details as JSON text.
CREATE TABLE reservations (
    order_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('RESERVED', 'COMMITTED', 'RELEASED', 'FAILED')),
    items_key TEXT NOT NULL,
    shortages TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE reservation_items (
    order_id TEXT NOT NULL REFERENCES reservations (order_id),
    product_id TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);

CREATE TABLE adjustments (
    id TEXT PRIMARY KEY,
    product_id TEXT NOT NULL,
    delta BIGINT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX adjustments_product ON adjustments (product_id, created_at);
