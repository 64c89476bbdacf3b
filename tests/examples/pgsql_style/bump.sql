-- Two statements, a bound value and a percent sign that is not a placeholder.
UPDATE accounts SET plan = :plan WHERE email LIKE '%@example.com';
INSERT INTO invoices (account_id, amount) VALUES (2, 10);
