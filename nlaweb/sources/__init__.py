"""NLA sources as the web sees them: the configured list (`configured`), their admin page
(`admin_page`) and `manage.py prepare_demo`, which builds the embedded demo source."""
