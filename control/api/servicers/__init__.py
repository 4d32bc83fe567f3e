"""The servicers: thin adapters from requests to the plain functions of control/'s rooms, one module per area."""
