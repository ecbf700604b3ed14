-- A committed reservation whose order was cancelled before shipping gives its
-- units back (POST /v1/reservations/:orderId/return). Its row keeps state
-- COMMITTED and records returned_at; the API shows it as RETURNED. A column
-- rather than a new state value, because SQLite cannot change the state's
-- CHECK without rebuilding a table that reservation_items references.
ALTER TABLE reservations ADD COLUMN returned_at TEXT;
