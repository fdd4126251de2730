"""
The demo of the observability app: embedded PostgreSQL, demo data, fakes and the bot simulator.

Kept out of the reusable app (``observability``): a production install carries neither this
package nor ``pgserver``. The host project enables it (``project/settings.py``, ``DEMO_APP``)
with the embedded database and in the tests. Imports point one way: this package uses the
app, the app never imports this package.
"""
