"""A music store with the layout of the public Chinook sample database, and generated data."""
