"""Request middleware, in the order settings.MIDDLEWARE runs it: health probes, the database-outage
page, form bodies read once."""
