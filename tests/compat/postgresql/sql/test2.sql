INSERT INTO test_load (name) VALUES ('two');
