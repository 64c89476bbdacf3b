CREATE TABLE accounts (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    plan text NOT NULL DEFAULT 'free',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE invoices (
    id serial PRIMARY KEY,
    account_id int NOT NULL REFERENCES accounts,
    amount numeric(10, 2) NOT NULL
);
INSERT INTO accounts (email, plan, created_at) VALUES
    ('alice.chen@example.com', 'pro', '2024-01-05 09:00+00'),
    ('bob.okafor@example.com', 'free', '2024-02-11 17:30+00');
INSERT INTO invoices (account_id, amount) VALUES (1, 49.00), (1, 49.00);
