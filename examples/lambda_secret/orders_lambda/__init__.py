"""A Lambda function that reads its database credentials from AWS Secrets Manager."""
