"""Schema migrations, applied in file-name order by control.db.migrate. Append new files; never edit landed ones."""
