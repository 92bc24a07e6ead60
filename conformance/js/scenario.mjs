// Real-client conformance scenario for Corvid, driven by matrix-js-sdk: a DM with many
// messages each way and a server restart in the middle (README.md, "The DM scenario").
//
// Usage (normally via run.sh):
//   node scenario.mjs <corvid-binary> <workdir> <config-file> <port>
//
// The scenario starts the server itself (cwd = workdir, `serve --config <config-file>`),
// restarts it midway and stops it at the end. Needs Node >= 22 (matrix-js-sdk 43).
// The shared machinery (server, reporting, waits) is in lib.mjs.
//
// Environment:
//   JS_CONFORMANCE_VERBOSE=1   let the SDK log to the console (normally silenced)
//   JS_CONFORMANCE_MESSAGES=N  messages per direction (default 200; the restart happens after N/2)
//   JS_CONFORMANCE_TIMEOUT_S=S global timeout (default 240)

import { setTimeout as sleep } from "node:timers/promises";

import {
    BASE_URL,
    FatalError,
    REQUEST_TIMEOUT_MS,
    ResumableStore,
    api,
    describeError,
    note,
    out,
    problem,
    register,
    run,
    safeJson,
    sdk,
    setStep,
    startServer,
    stopServer,
    waitForVersions,
    waitUntil,
    withTimeout,
} from "./lib.mjs";

const N = Number(process.env.JS_CONFORMANCE_MESSAGES ?? 200); // messages per direction
const HALF = Math.floor(N / 2);
const DELIVERY_TIMEOUT_MS = 60_000;
const PAGE_LIMIT = 50;
const participants = []; // every participant created, for the summary even after a failure midway

function newParticipant(name, creds) {
    const p = {
        name,
        creds,
        client: null,
        other: null, // the other participant
        roomId: null,
        prepared: false,
        freshStart: true, // the current sync session started without `since` (initial sync)
        receivedIds: new Set(), // event ids of the other user's messages
        receivedBodies: new Set(),
        arrival: [], // bodies of newly received messages in arrival order
        dupById: [],
        dupByBody: [],
        replayedByInitialSync: 0,
        wireFirstSince: new Map(), // event id -> `since` of the /sync response that first delivered it
        wireDup: [], // events a later incremental /sync delivered again (one entry per event)
        wireDupIds: new Set(),
        wireRepeats: 0, // how many times such events were re-delivered in all
        dupIds: new Set(), // event ids delivered more than once (SDK- or wire-level)
        sent: [], // { body, eventId, tStart, tEnd }
        lastSyncState: null,
        lastSyncError: null,
    };
    participants.push(p);
    return p;
}

/** Wraps fetch to look at the raw /sync responses: the SDK silently drops events it already
 *  has in its timeline, so duplicates by event id are only visible on the wire. */
function wireRecorder(p) {
    return async (resource, init) => {
        const res = await fetch(resource, init);
        const url = new URL(String(resource instanceof Request ? resource.url : resource));
        if (url.pathname.endsWith("/sync") && p.firstSyncSince === undefined) {
            p.firstSyncSince = url.searchParams.get("since");
        }
        if (url.pathname.endsWith("/sync") && res.status === 200) {
            const since = url.searchParams.get("since");
            res.clone()
                .json()
                .then((j) => recordWireSync(p, since, j))
                .catch(() => {});
        }
        return res;
    };
}

function recordWireSync(p, since, json) {
    if (!p.roomId) return;
    const timeline = json?.rooms?.join?.[p.roomId]?.timeline;
    if (since !== null && timeline?.limited) {
        p.limitedSyncs = (p.limitedSyncs ?? 0) + 1;
        process.stderr.write(`note: ${p.name} got a limited timeline from /sync since=${since}: the SDK will not emit the gap live\n`);
    }
    const events = timeline?.events ?? [];
    for (const e of events) {
        if (e?.type !== "m.room.message" || typeof e.event_id !== "string") continue;
        if (!p.wireFirstSince.has(e.event_id)) {
            p.wireFirstSince.set(e.event_id, since);
            continue;
        }
        // A retried request with the same `since` may legitimately repeat events, and so
        // may an initial sync (no `since`); an incremental sync from a later token may not.
        const first = p.wireFirstSince.get(e.event_id);
        if (since !== null && since !== first) {
            p.wireRepeats++;
            if (p.wireDupIds.has(e.event_id)) continue;
            p.wireDupIds.add(e.event_id);
            p.dupIds.add(e.event_id);
            p.wireDup.push(`${e.event_id} (${e.content?.body}): first in /sync since=${first}, again in /sync since=${since}`);
        }
    }
}

function attachListeners(p) {
    const client = p.client;
    client.on(sdk.RoomEvent.Timeline, (event, room, toStartOfTimeline, removed) => {
        if (toStartOfTimeline || removed) return; // live events only
        if (!p.roomId || !room || room.roomId !== p.roomId) return;
        if (event.getType() !== "m.room.message") return;
        if (event.getSender() !== p.other.creds.userId) return;
        const id = event.getId();
        const body = event.getContent()?.body;
        if (p.receivedIds.has(id)) {
            if (p.freshStart && !p.prepared) {
                // A client that starts without `since` legitimately gets recent history again.
                p.replayedByInitialSync++;
            } else {
                p.dupById.push(`${id} (${body})`);
                p.dupIds.add(id);
            }
            return;
        }
        p.receivedIds.add(id);
        if (p.receivedBodies.has(body)) {
            p.dupByBody.push(`${body} (new event id ${id})`);
            return;
        }
        p.receivedBodies.add(body);
        p.arrival.push(body);
    });
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        p.lastSyncState = state;
        if (data?.error) p.lastSyncError = describeError(data.error);
        if (state === sdk.SyncState.Prepared) p.prepared = true;
    });
}

async function startParticipant(p, { reuseClient }) {
    if (!reuseClient || !p.client) {
        if (p.client) p.client.removeAllListeners();
        p.client = sdk.createClient({
            baseUrl: BASE_URL,
            userId: p.creds.userId,
            accessToken: p.creds.accessToken,
            deviceId: p.creds.deviceId,
            store: new ResumableStore({}),
            fetchFn: wireRecorder(p),
        });
        attachListeners(p);
    }
    p.freshStart = !p.client.store.getSyncToken();
    p.firstSyncSince = undefined;
    p.prepared = false;
    p.lastSyncError = null;
    // The SDK uses this limit for every sync's timeline. A client that falls
    // more than `limit` events behind gets a `limited` timeline and does not
    // emit the gap's events live (it pages them in on scrollback); 100 keeps
    // a CPU-starved run (the whole suite in parallel) from hitting that.
    await withTimeout(p.client.startClient({ initialSyncLimit: 100 }), REQUEST_TIMEOUT_MS, `${p.name}: startClient`);
    try {
        await waitUntil(() => p.prepared, REQUEST_TIMEOUT_MS, `${p.name}: sync state PREPARED`);
    } catch (e) {
        throw new FatalError(
            `${e.message} (last sync state ${p.lastSyncState}${p.lastSyncError ? ", last error: " + p.lastSyncError : ""})`,
        );
    }
}

function stopParticipant(p) {
    p.client?.stopClient();
}

async function sendRange(p, from, to) {
    for (let i = from; i < to; i++) {
        const body = `${p.name}-${i}`;
        const tStart = performance.now();
        let res;
        try {
            res = await withTimeout(
                p.client.sendTextMessage(p.roomId, body),
                REQUEST_TIMEOUT_MS,
                `${p.name}: send ${body}`,
            );
        } catch (e) {
            throw new FatalError(`${p.name}: sending "${body}" (PUT /rooms/{roomId}/send/m.room.message/{txnId}) failed: ${describeError(e)}`);
        }
        const tEnd = performance.now();
        if (typeof res?.event_id !== "string" || !res.event_id.startsWith("$")) {
            problem(`${p.name}: send "${body}" returned no valid event_id: ${safeJson(res)}`);
        }
        p.sent.push({ body, eventId: res?.event_id, tStart, tEnd });
    }
}

/** Waits until every participant has received `count` of the other's messages
 *  (`parts` is a list of [participant, count]); reports what is missing otherwise. */
async function waitDelivery(parts, what, timeoutMs = DELIVERY_TIMEOUT_MS) {
    try {
        await waitUntil(() => parts.every(([p, count]) => p.receivedIds.size >= count), timeoutMs, what, 100);
        return true;
    } catch (e) {
        for (const [p, count] of parts) {
            if (p.receivedIds.size < count) {
                const missing = [];
                for (let i = 0; i < count; i++) {
                    if (!p.receivedBodies.has(`${p.other.name}-${i}`)) missing.push(`${p.other.name}-${i}`);
                }
                problem(
                    `${what}: ${p.name} received only ${p.receivedIds.size}/${count} of ${p.other.name}'s messages via /sync within ${timeoutMs} ms; missing: ${missing.slice(0, 20).join(", ")}${missing.length > 20 ? ", ..." : ""} (last sync state ${p.lastSyncState}${p.lastSyncError ? ", last error: " + p.lastSyncError : ""})`,
                );
            }
        }
        return false;
    }
}

async function paginate(token, roomId, dir) {
    const events = [];
    let from = null;
    for (let page = 0; ; page++) {
        if (page > 100) {
            problem(`/messages dir=${dir}: still returning an "end" token after 100 pages`);
            break;
        }
        const qs = new URLSearchParams({ dir, limit: String(PAGE_LIMIT) });
        if (from !== null) qs.set("from", from);
        const url = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?${qs}`;
        const r = await api("GET", url, { token });
        if (r.status !== 200 || !r.json) {
            throw new FatalError(`GET ${url}: HTTP ${r.status} ${r.text.slice(0, 500)}`);
        }
        const { chunk, start, end } = r.json;
        if (!Array.isArray(chunk)) throw new FatalError(`GET ${url}: "chunk" is not an array: ${r.text.slice(0, 300)}`);
        if (typeof start !== "string") problem(`GET ${url}: required "start" token missing or not a string`);
        if (from !== null && start !== from) {
            note(`GET ${url}: "start" (${start}) differs from "from" (${from}); the spec says it will be the same`);
        }
        if (chunk.length > PAGE_LIMIT) problem(`GET ${url}: chunk has ${chunk.length} events, more than limit=${PAGE_LIMIT}`);
        events.push(...chunk);
        if (end === undefined || end === null) break;
        if (typeof end !== "string") {
            problem(`GET ${url}: "end" is not a string: ${safeJson(end)}`);
            break;
        }
        if (end === from && chunk.length === 0) {
            problem(`GET ${url}: returned an empty chunk and "end" equal to "from" (pagination would never finish)`);
            break;
        }
        from = end;
    }
    return events;
}

function checkPerSenderOrder(label, bodies, name) {
    const mine = bodies.filter((b) => typeof b === "string" && b.startsWith(name + "-"));
    const expected = Array.from({ length: N }, (_, i) => `${name}-${i}`);
    if (mine.length !== expected.length || mine.some((b, i) => b !== expected[i])) {
        const idx = mine.findIndex((b, i) => b !== expected[i]);
        problem(
            `${label}: ${name}'s messages not exactly ${name}-0..${name}-${N - 1} in order (got ${mine.length}; first mismatch at index ${idx}: got ${mine[idx]}, expected ${expected[idx]})`,
        );
    }
}

// ---------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------
async function scenario() {
    setStep("start server");
    startServer();
    const versions = await waitForVersions();
    out(`  server answers /versions: ${safeJson(versions.versions ?? [])}`);

    setStep("register alice and bob");
    const suffix = Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
    const alice = newParticipant("alice", await register(`alice_${suffix}`));
    const bob = newParticipant("bob", await register(`bob_${suffix}`));
    alice.other = bob;
    bob.other = alice;
    out(`  ${alice.creds.userId} (device ${alice.creds.deviceId}), ${bob.creds.userId} (device ${bob.creds.deviceId})`);

    setStep("start both clients (initial sync)");
    await Promise.all([startParticipant(alice, { reuseClient: true }), startParticipant(bob, { reuseClient: true })]);

    setStep("alice creates a DM and invites bob");
    let created;
    try {
        created = await withTimeout(
            alice.client.createRoom({ is_direct: true, invite: [bob.creds.userId], preset: "trusted_private_chat" }),
            REQUEST_TIMEOUT_MS,
            "createRoom",
        );
    } catch (e) {
        throw new FatalError(`POST /_matrix/client/v3/createRoom failed: ${describeError(e)}`);
    }
    const roomId = created.room_id;
    if (typeof roomId !== "string" || !roomId.startsWith("!")) throw new FatalError(`createRoom returned no valid room_id: ${safeJson(created)}`);
    alice.roomId = bob.roomId = roomId;
    out(`  room ${roomId}`);

    setStep("bob waits for the invite (via /sync) and joins");
    await waitUntil(
        () => bob.client.getRoom(roomId)?.getMyMembership() === "invite",
        REQUEST_TIMEOUT_MS,
        "bob: invite to the DM arriving through /sync",
    );
    const inviteEvent = bob.client.getRoom(roomId)?.getMember(bob.creds.userId)?.events?.member;
    if (inviteEvent && inviteEvent.getContent()?.is_direct !== true) {
        problem(
            `createRoom with is_direct=true: bob's invite m.room.member event lacks "is_direct": true (content ${safeJson(inviteEvent.getContent())})`,
        );
    }
    try {
        await withTimeout(bob.client.joinRoom(roomId), REQUEST_TIMEOUT_MS, "bob joinRoom");
    } catch (e) {
        throw new FatalError(`bob: POST /join/${roomId} failed: ${describeError(e)}`);
    }
    await waitUntil(
        () => bob.client.getRoom(roomId)?.getMyMembership() === "join",
        REQUEST_TIMEOUT_MS,
        "bob: own join arriving through /sync",
    );
    await waitUntil(
        () => alice.client.getRoom(roomId)?.getMember(bob.creds.userId)?.membership === "join",
        REQUEST_TIMEOUT_MS,
        "alice: bob's join arriving through /sync",
    );
    {
        const state = alice.client.getRoom(roomId).currentState;
        const joinRule = state.getStateEvents("m.room.join_rules", "")?.getContent()?.join_rule;
        if (joinRule !== "invite") problem(`trusted_private_chat room: join_rule is ${safeJson(joinRule)}, expected "invite"`);
        const hv = state.getStateEvents("m.room.history_visibility", "")?.getContent()?.history_visibility;
        if (hv !== "shared") problem(`trusted_private_chat room: history_visibility is ${safeJson(hv)}, expected "shared"`);
        const pl = state.getStateEvents("m.room.power_levels", "")?.getContent();
        const users = pl?.users ?? {};
        if (users[bob.creds.userId] !== users[alice.creds.userId]) {
            note(
                `trusted_private_chat: bob's power level (${users[bob.creds.userId]}) differs from alice's (${users[alice.creds.userId]}); the spec says invitees get the creator's level`,
            );
        }
    }

    const OFFLINE = Math.min(5, HALF); // bob's messages sent while alice is offline, before the restart
    setStep(`exchange messages: alice sends ${HALF}, bob ${HALF - OFFLINE}`);
    await Promise.all([sendRange(alice, 0, HALF), sendRange(bob, 0, HALF - OFFLINE)]);
    await waitDelivery(
        [
            [alice, HALF - OFFLINE],
            [bob, HALF],
        ],
        "delivery before the restart",
    );
    out(`  alice has ${alice.receivedIds.size} of bob's, bob has ${bob.receivedIds.size} of alice's`);

    setStep(`alice goes offline (stopClient); bob sends ${OFFLINE} more`);
    stopParticipant(alice);
    const aliceSyncTokenBeforeRestart = alice.client.store.getSyncToken();
    await sendRange(bob, HALF - OFFLINE, HALF);

    setStep("bob stops too; restart the server (SIGTERM, same port and database)");
    stopParticipant(bob);
    await sleep(200);
    await stopServer();
    startServer();
    await waitForVersions();

    setStep("restart clients: alice resumes /sync with her since token, bob starts a new client (initial sync)");
    await Promise.all([startParticipant(alice, { reuseClient: true }), startParticipant(bob, { reuseClient: false })]);
    out(`  alice's first /sync after the restart: since=${alice.firstSyncSince}; bob's: since=${bob.firstSyncSince}`);
    if (alice.firstSyncSince !== aliceSyncTokenBeforeRestart) {
        problem(`alice's client did not resume with her pre-restart sync token ${aliceSyncTokenBeforeRestart} (used ${alice.firstSyncSince})`);
    }
    if (bob.client.getRoom(roomId)?.getMyMembership() !== "join") {
        problem(`after the restart, bob's initial /sync does not show him joined to ${roomId}`);
    }
    if (
        await waitDelivery(
            [[alice, HALF]],
            `/sync since=${aliceSyncTokenBeforeRestart} (a token from before the restart) delivering the ${OFFLINE} messages bob sent while alice was offline`,
            REQUEST_TIMEOUT_MS,
        )
    ) {
        out(`  alice got bob's ${OFFLINE} messages sent while she was offline`);
    }

    setStep(`exchange ${N - HALF} more messages each way`);
    await Promise.all([sendRange(alice, HALF, N), sendRange(bob, HALF, N)]);
    await waitDelivery(
        [
            [alice, N],
            [bob, N],
        ],
        `delivery of all ${N} messages each way`,
    );

    setStep("check what the clients received through /sync");
    for (const p of [alice, bob]) {
        const o = p.other;
        if (p.receivedBodies.size !== N) {
            problem(`${p.name} received ${p.receivedBodies.size} distinct bodies from ${o.name}, expected ${N}`);
        }
        if (p.dupById.length) {
            problem(`${p.name} received ${p.dupById.length} duplicate event ids from ${o.name}: ${p.dupById.slice(0, 10).join(", ")}`);
        }
        if (p.dupByBody.length) {
            problem(
                `${p.name} received ${p.dupByBody.length} duplicate bodies (same message, different event id) from ${o.name}: ${p.dupByBody.slice(0, 10).join(", ")}`,
            );
        }
        const sentIds = new Set(o.sent.map((s) => s.eventId));
        const unknown = [...p.receivedIds].filter((id) => !sentIds.has(id));
        if (unknown.length) {
            problem(`${p.name} received ${unknown.length} event ids from ${o.name} that /send never returned: ${unknown.slice(0, 5).join(", ")}`);
        }
        if (p.wireDup.length) {
            problem(
                `${p.name}'s incremental /sync responses repeated ${p.wireDup.length} already-delivered m.room.message events (${p.wireRepeats} repeats in all; the SDK hides these): ${p.wireDup.slice(0, 5).join("; ")}`,
            );
        }
        // /sync must deliver one sender's messages in the order they were sent.
        const nums = p.arrival.map((b) => Number(String(b).slice(o.name.length + 1)));
        const k = nums.findIndex((n, i) => i > 0 && !(n > nums[i - 1]));
        if (k !== -1) {
            problem(
                `${p.name}: ${o.name}'s messages arrived through /sync out of order: ${p.arrival[k - 1]} then ${p.arrival[k]}`,
            );
        }
    }
    if (bob.replayedByInitialSync) {
        out(`  bob's post-restart initial sync re-delivered ${bob.replayedByInitialSync} already-seen messages (expected; not duplicates)`);
    }

    setStep("check history: GET /rooms/{roomId}/messages dir=b and dir=f, limit=50");
    const back = await paginate(alice.creds.accessToken, roomId, "b");
    const fwd = await paginate(bob.creds.accessToken, roomId, "f");
    const msgs = back.filter((e) => e.type === "m.room.message");
    out(`  dir=b: ${back.length} events, ${msgs.length} m.room.message; dir=f: ${fwd.length} events`);
    if (msgs.length !== 2 * N) problem(`/messages dir=b returned ${msgs.length} m.room.message events, expected ${2 * N}`);
    const ids = msgs.map((e) => e.event_id);
    const distinct = new Set(ids);
    if (distinct.size !== ids.length) problem(`/messages dir=b returned ${ids.length - distinct.size} duplicate m.room.message event ids`);
    const allBack = back.map((e) => e.event_id);
    if (new Set(allBack).size !== allBack.length) problem(`/messages dir=b returned the same event more than once across pages`);
    const chrono = [...msgs].reverse(); // server order, oldest first
    const chronoBodies = chrono.map((e) => e.content?.body);
    checkPerSenderOrder("/messages dir=b (reversed)", chronoBodies, "alice");
    checkPerSenderOrder("/messages dir=b (reversed)", chronoBodies, "bob");
    for (const e of chrono) {
        const name = e.content?.body?.split("-")[0];
        const expectedSender = name === "alice" ? alice.creds.userId : name === "bob" ? bob.creds.userId : null;
        if (e.sender !== expectedSender) {
            problem(`/messages: event ${e.event_id} with body ${safeJson(e.content?.body)} has sender ${e.sender}`);
            break;
        }
        if (e.room_id !== roomId) {
            // ClientEvent (definitions/client_event.yaml) requires room_id.
            problem(`/messages: event ${e.event_id} has room_id ${safeJson(e.room_id)}, expected ${roomId}`);
            break;
        }
        if (typeof e.origin_server_ts !== "number") {
            problem(`/messages: event ${e.event_id} lacks a numeric origin_server_ts (required by ClientEvent)`);
            break;
        }
    }
    // The event ids in history must be exactly the ones /send returned.
    const sentById = new Map([...alice.sent, ...bob.sent].map((s) => [s.eventId, s]));
    const notSent = ids.filter((id) => !sentById.has(id));
    if (notSent.length) problem(`/messages contains ${notSent.length} m.room.message ids that /send never returned: ${notSent.slice(0, 5).join(", ")}`);
    const missingInHistory = [...sentById.keys()].filter((id) => !distinct.has(id));
    if (missingInHistory.length) {
        problem(
            `/messages lacks ${missingInHistory.length} sent events: ${missingInHistory
                .slice(0, 5)
                .map((id) => `${sentById.get(id).body}=${id}`)
                .join(", ")}`,
        );
    }
    // dir=f must be the exact reverse of dir=b (same events, same server-assigned order).
    const fwdIds = fwd.map((e) => e.event_id);
    const backRev = [...allBack].reverse();
    if (fwdIds.length !== backRev.length || fwdIds.some((id, i) => id !== backRev[i])) {
        const i = fwdIds.findIndex((id, k) => id !== backRev[k]);
        problem(
            `/messages dir=f order (${fwdIds.length} events) is not the reverse of dir=b (${backRev.length} events); first difference at position ${i}: dir=f ${fwdIds[i]} vs reversed dir=b ${backRev[i]}`,
        );
    }
    // The server's order must respect real time: if the /send of A returned before
    // the /send of B was started, A must come before B in the room's history.
    {
        const pos = new Map(chrono.map((e, i) => [e.event_id, i]));
        const sends = [...alice.sent, ...bob.sent].filter((s) => pos.has(s.eventId));
        let violations = 0;
        let example = "";
        for (const a of sends) {
            for (const b of sends) {
                if (a.tEnd < b.tStart && pos.get(a.eventId) > pos.get(b.eventId)) {
                    violations++;
                    if (!example) example = `${a.body} (send completed first) is after ${b.body} (sent later)`;
                }
            }
        }
        if (violations) problem(`/messages order contradicts the order sends completed in ${violations} pairs, e.g. ${example}`);
    }
    // The order in which each client saw the other's messages via /sync must agree with history.
    for (const p of [alice, bob]) {
        const histOrder = chronoBodies.filter((b) => typeof b === "string" && b.startsWith(p.other.name + "-"));
        if (histOrder.length === p.arrival.length && histOrder.some((b, i) => b !== p.arrival[i])) {
            problem(`${p.name}: the /sync arrival order of ${p.other.name}'s messages differs from the /messages order`);
        }
    }

    setStep("check history as a client scrolls back (bob's new client, from the /sync prev_batch)");
    {
        const room = bob.client.getRoom(roomId);
        let rounds = 0;
        while (room.oldState.paginationToken !== null && rounds < 100) {
            rounds++;
            try {
                await withTimeout(bob.client.scrollback(room, PAGE_LIMIT), REQUEST_TIMEOUT_MS, "scrollback");
            } catch (e) {
                throw new FatalError(`bob: scrollback (GET /messages from the /sync prev_batch token) failed: ${describeError(e)}`);
            }
        }
        const tl = room
            .getLiveTimeline()
            .getEvents()
            .filter((e) => e.getType() === "m.room.message" && !e.status);
        const tlIds = tl.map((e) => e.getId());
        if (new Set(tlIds).size !== 2 * N) {
            problem(`bob's timeline after scrolling back to the start holds ${new Set(tlIds).size} distinct messages, expected ${2 * N}`);
        }
        const tlBodies = tl.map((e) => e.getContent()?.body);
        // Only alice's order is meaningful here: the SDK keeps bob's own messages at their local-echo position.
        checkPerSenderOrder("bob's timeline after scrollback", tlBodies, "alice");
        out(`  ${rounds} scrollback requests, ${tl.length} messages in bob's timeline`);
    }
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------
function lostCount() {
    let received = 0;
    for (const p of participants) received += Math.min(N, p.receivedBodies.size);
    return 2 * N - received;
}
function dupCount() {
    let d = 0;
    for (const p of participants) d += p.dupIds.size + p.dupByBody.length;
    return d;
}

await run(scenario, {
    stopClients: () => participants.forEach(stopParticipant),
    summary: (ms) => `conformance js-sdk: ${2 * N} messages, ${lostCount()} lost, ${dupCount()} duplicated, ${ms} ms`,
});
