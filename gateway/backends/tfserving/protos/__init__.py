"""TF Serving's wire protocol, the subset the gateway uses, generated from the .proto files here."""
