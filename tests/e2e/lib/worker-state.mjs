// wrangler dev's local Durable Object storage (its --persist-to directory, E2E_WORKER_STATE), read
// with python3's sqlite3: one SQLite file per object, named in miniflare's own table.
import { execFileSync } from 'node:child_process';
import path from 'node:path';

const SCRIPT = `
import glob, json, sqlite3, sys
found = None
for f in glob.glob(sys.argv[1] + "/*.sqlite"):
    db = sqlite3.connect("file:" + f + "?mode=ro", uri=True)
    try:
        names = [r[0] for r in db.execute("SELECT name FROM __miniflare_do_name")]
    except sqlite3.OperationalError:
        continue
    if sys.argv[2] in names:
        found = [list(r) for r in db.execute(sys.argv[3])]
print(json.dumps(found))
`;

/** The rows (arrays) `sql` reads in the storage of the Durable Object `name` of class `className`
 * (the Worker is named `everjust`); null when there is no such object's storage. */
export function objectRows(state, className, name, sql) {
  const dir = path.join(state, 'v3', 'do', `everjust-${className}`);
  return JSON.parse(execFileSync('python3', ['-c', SCRIPT, dir, name, sql], { encoding: 'utf8' }));
}
