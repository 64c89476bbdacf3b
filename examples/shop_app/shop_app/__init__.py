"""A small shop: users place orders of items. The example for scenarios and factories."""
