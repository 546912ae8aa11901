"""casgi's gunicorn worker, also writing the options it hands to casgi as JSON
to the file $CASGI_TEST_WORKER_OPTIONS names (tests/test_gunicorn.py)."""

import json
import os

from casgi.workers import CasgiWorker


class OptionsRecordingWorker(CasgiWorker):
    def _options(self):
        options = super()._options()
        with open(os.environ["CASGI_TEST_WORKER_OPTIONS"], "w") as f:
            json.dump(options, f)
        return options
