CREATE TABLE orders (
    id serial PRIMARY KEY,
    customer text NOT NULL,
    item text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0)
);
