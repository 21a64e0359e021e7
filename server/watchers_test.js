// A client that is not ours (grpc-js): 200 concurrent WatchEvents streams against a real
// umpathd; every watcher must see the same events, in revision order, with no gap. Half
// ask for several events to a message when behind (max_events_per_message), half do not
// and must get every event alone, as clients from before that field do.
// Usage: node watchers_test.js SOCKET PROTO_DIR
'use strict';
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const [socket, protoDir] = process.argv.slice(2);
const WATCHERS = 200;
const CHANGES = 40;

const def = loader.loadSync(path.join(protoDir, 'umpath/v1/control.proto'), {
  includeDirs: [protoDir, '/usr/include'], keepCase: true, longs: String, enums: String,
  defaults: true,
});
const v1 = grpc.loadPackageDefinition(def).umpath.v1;
const target = 'unix://' + socket;
const admin = new v1.MultipathControl(target, grpc.credentials.createInsecure());

function fail(msg) {
  console.error('FAIL: ' + msg);
  process.exit(1);
}
setTimeout(() => fail('timed out'), 60000).unref();

const watchers = [];
let snapshots = 0;
let batches = 0;
for (let i = 0; i < WATCHERS; i++) {
  // Separate channels, as separate sidecars would have.
  const client = new v1.MultipathControl(target, grpc.credentials.createInsecure(),
                                         {'grpc.use_local_subchannel_pool': 1});
  const batching = i % 2 === 1;
  const w = {start: null, revisions: [], ended: false};
  w.call = client.WatchEvents({since_revision: 0, max_events_per_message: batching ? 16 : 0});
  const got = (e) => {
    w.revisions.push(Number(e.revision));
    if (w.revisions.length === CHANGES) check();
  };
  w.call.on('data', (msg) => {
    if (msg.snapshot) {
      w.start = Number(msg.snapshot.revision);
      if (++snapshots === WATCHERS) makeChanges();
    } else if (msg.event) {
      got(msg.event);
    } else if (msg.batch) {
      if (!batching) fail(`watcher ${i} did not ask for batches but got one`);
      batches++;
      msg.batch.events.forEach(got);
    }
  });
  w.call.on('error', (e) => {
    if (e.code !== grpc.status.CANCELLED) fail(`watcher ${i}: ${e.code} ${e.details}`);
  });
  watchers.push(w);
}

function makeChanges() {
  let i = 0;
  const next = () => {
    if (i === CHANGES) return;
    admin.SetDefaultDelayedRemoval({delayed_removal_secs: 100 + (i % 2)}, (err) => {
      if (err) fail('SetDefaultDelayedRemoval: ' + err.details);
      i++;
      next();
    });
  };
  next();
}

let done = 0;
function check() {
  if (++done < WATCHERS) return;
  const reference = watchers[0].revisions;
  watchers.forEach((w, i) => {
    for (let k = 0; k < CHANGES; k++) {
      if (w.revisions[k] !== reference[k]) fail(`watcher ${i} saw ${w.revisions} not ${reference}`);
      if (k > 0 && w.revisions[k] !== w.revisions[k - 1] + 1) fail(`watcher ${i}: gap at ${k}`);
    }
    if (w.revisions[0] <= w.start) fail(`watcher ${i}: event before its snapshot`);
  });
  console.log(`grpc-js: ${WATCHERS} watchers each saw revisions ${reference[0]}..` +
              `${reference[CHANGES - 1]} in order (${batches} batches)`);
  watchers.forEach((w) => w.call.cancel());
  resume(reference, watchers[0].start);
}

// Two watchers resume after `from` with the 40 events waiting: the one that asks for
// batches gets them in batches, the one that does not gets 40 single events.
function resume(reference, from) {
  let pending = 2;
  [16, 0].forEach((max) => {
    const revisions = [];
    let messages = 0;
    const call = admin.WatchEvents({since_revision: from, max_events_per_message: max});
    call.on('data', (msg) => {
      messages++;
      if (msg.event) revisions.push(Number(msg.event.revision));
      else if (msg.batch) msg.batch.events.forEach((e) => revisions.push(Number(e.revision)));
      else fail(`resumed watcher (max ${max}) got neither an event nor a batch`);
      if (revisions.length < CHANGES) return;
      if (JSON.stringify(revisions) !== JSON.stringify(reference)) {
        fail(`resumed watcher (max ${max}) saw ${revisions} not ${reference}`);
      }
      const want = max ? Math.ceil(CHANGES / max) : CHANGES;
      if (messages !== want) fail(`resumed watcher (max ${max}): ${messages} messages, not ${want}`);
      console.log(`grpc-js: resumed with max_events_per_message ${max}: ${CHANGES} events in ` +
                  `${messages} messages`);
      call.cancel();
      if (--pending === 0) process.exit(0);
    });
    call.on('error', (e) => {
      if (e.code !== grpc.status.CANCELLED) fail(`resumed watcher: ${e.code} ${e.details}`);
    });
  });
}
