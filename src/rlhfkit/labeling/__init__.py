"""The labelling web app: people compare model responses; judgements become comparison records.

Layout, one job per module:

- `db`         SQLite connection, schema, `BEGIN IMMEDIATE` transactions
- `tasks`      reading candidates files into tasks (no duplicates on reload)
- `labelers`   labellers and their access tokens (only a hash is stored)
- `decisions`  what a labeller may answer for a task, resolved to response indices
- `queue`      handing out tasks under a lease, and recording judgements
- `progress`   counts for a labeller and for the admin page
- `agreement`  how often two labellers gave the same verdict (pure)
- `export`     judgements -> comparison and ranking records (atomic files)
- `auth`       who is asking: bearer token or cookie, with a CSRF check
- `guard`      before the body is read: token, rate limit, size limit; security headers on every response
- `app`        the FastAPI app: pages, static files, the JSON API
- `cli`        `rlhfkit label serve | add-labeler | export`

See docs/labeling.md for how to run it and the JSON API.
"""
