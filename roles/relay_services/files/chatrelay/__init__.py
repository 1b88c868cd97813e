"""The chatmail relay's own services: auth, encryption filter, last-login, expiry."""
