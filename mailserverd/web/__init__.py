"""HTTP served from the server's one reactor with twisted.web."""
