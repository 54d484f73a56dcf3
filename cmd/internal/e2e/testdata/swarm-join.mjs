// Joins a swarm item with the browser library (client/web/meshup.js), run
// by Node for TestSwarmBrowserLibrary:
//
//	node --experimental-websocket swarm-join.mjs MESHUP_JS RENDEZVOUS FILE STATE_JSON
//
// STATE_JSON is the state file of `meshup send --swarm --state`: the item's
// id, owner secret and key. Prints "joined LINK", then "served N" as relays
// acknowledge bytes, until killed; "refused STATUS MESSAGE" if the
// rendezvous refuses the join.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const [lib, rdv, file, statePath] = process.argv.slice(2);
const { Client } = await import(pathToFileURL(lib).href);
const st = JSON.parse(readFileSync(statePath, 'utf8'));
const c = new Client({ url: rdv, clientName: 'swarm-join.mjs' });
c.addEventListener('error', (e) => console.log('error', e.detail.message));
c.addEventListener('progress', (e) => console.log('served', e.detail.served));
c.connect();
const blob = new Blob([readFileSync(file)]);
try {
  const it = await c.publish(blob, { id: st.id, owner: st.owner, key: st.key, encrypt: !!st.key, swarm: true });
  console.log('joined', it.shareURL);
} catch (e) {
  console.log('refused', e.status, e.message);
  process.exit(1);
}
