// Messenger conformance scenario for Corvid, driven by matrix-js-sdk: two clients in a DM
// exercise what a messenger shows (README.md, "The messenger scenario"): typing, delivered
// and read receipts, edits, reactions, threads, search, unread counts, and the latency of
// ephemeral events. Every step is observed through the SDK's own model (Room, RoomMember,
// MatrixEvent, Thread, receipts, notification counts, `client.on(...)` events); raw HTTP
// only adds checks on what the server returned.
//
// Usage (normally via run.sh):
//   node messenger.mjs <corvid-binary> <workdir> <config-file> <port>
//
// Environment:
//   JS_CONFORMANCE_VERBOSE=1          let the SDK log to the console (normally silenced)
//   JS_CONFORMANCE_TIMEOUT_S=S        global timeout (default 240)
//   JS_CONFORMANCE_LATENCY_ROUNDS=N   typing toggles and receipt rounds for the latency
//                                     figures (default 20 each)

import {
    BASE_URL,
    FatalError,
    REQUEST_TIMEOUT_MS,
    api,
    call,
    describeError,
    note,
    out,
    problem,
    problems,
    register,
    run,
    safeJson,
    sdk,
    setStep,
    startServer,
    waitForVersions,
    waitUntil,
} from "./lib.mjs";

/** Longest wait for one observation (a sync round trip or two, on a loaded machine). */
const OBSERVE_TIMEOUT_MS = 15_000;
const LATENCY_ROUNDS = Math.max(1, Number(process.env.JS_CONFORMANCE_LATENCY_ROUNDS ?? 20));
const DELIVERED = "org.corvid.delivered";
const THUMBS_UP = "\u{1F44D}";

// The numbered steps; the final `N passed, M failed` counts them (a step not reached fails).
const STEPS = [
    "1. typing",
    "2. delivered, then read",
    "3. edit",
    "4. reaction",
    "5. thread",
    "6. search",
    "7. unread counts",
    "8. ephemeral latency",
];
const stepResults = new Map(); // step name -> true (passed) / false (failed)
let setupDone = false;
const participants = [];
const latency = { typing: [], receipt: [], delivered: [] };

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/** Runs one numbered step: its problems (and a FatalError it throws) fail that step only,
 *  and the scenario goes on with the next one. */
async function step(name, fn) {
    setStep(name);
    const before = problemCount();
    try {
        await fn();
    } catch (e) {
        problem(e instanceof FatalError ? e.message : `unexpected error: ${e?.stack ?? describeError(e)}`);
    }
    const ok = problemCount() === before;
    stepResults.set(name, ok);
    out(`  ${ok ? "ok" : "FAILED"}: ${name}`);
}
const problemCount = () => problems.length;
const fail = problem;

/** Waits for `cond()`; on timeout throws a FatalError that says what was expected and what
 *  was seen instead (`seen()` describes the current state). */
async function observe(cond, what, seen = () => "", ms = OBSERVE_TIMEOUT_MS) {
    try {
        await waitUntil(cond, ms, what, 20);
    } catch (e) {
        const s = seen();
        throw new FatalError(`${e.message}${s ? `; seen instead: ${s}` : ""}`);
    }
}

function percentile(samples, p) {
    if (!samples.length) return NaN;
    const sorted = [...samples].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
const fmt = (ms) => (Number.isFinite(ms) ? ms.toFixed(1) : "n/a");

// ---------------------------------------------------------------------------
// Participants: an SDK client each, plus what its listeners observed
// ---------------------------------------------------------------------------
function newParticipant(name, creds) {
    const p = {
        name,
        creds,
        client: null,
        other: null,
        roomId: null,
        prepared: false,
        lastSyncState: null,
        lastSyncError: null,
        typing: [], // { t, userId, typing } from RoomMemberEvent.Typing in the room
        receipts: [], // { t, eventId, type, userId, threadId } from RoomEvent.Receipt in the room
        wire: [], // { t, join } the room's part of each raw /sync response that had it
    };
    participants.push(p);
    return p;
}

/** Looks at the raw /sync responses (through the SDK's fetchFn): the notification counts the
 *  server sent, to tell them from counts the SDK computes itself. */
function wireRecorder(p) {
    return async (resource, init) => {
        const res = await fetch(resource, init);
        const url = new URL(String(resource instanceof Request ? resource.url : resource));
        if (url.pathname.endsWith("/sync") && res.status === 200) {
            res.clone()
                .json()
                .then((j) => {
                    const join = p.roomId ? j?.rooms?.join?.[p.roomId] : undefined;
                    if (join) p.wire.push({ t: performance.now(), join });
                })
                .catch(() => {});
        }
        return res;
    };
}

function attachListeners(p) {
    const client = p.client;
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        p.lastSyncState = state;
        if (data?.error) p.lastSyncError = describeError(data.error);
        if (state === sdk.SyncState.Prepared) p.prepared = true;
    });
    client.on(sdk.RoomMemberEvent.Typing, (_event, member) => {
        if (member.roomId !== p.roomId) return;
        p.typing.push({ t: performance.now(), userId: member.userId, typing: member.typing });
    });
    client.on(sdk.RoomEvent.Receipt, (event, room) => {
        if (room.roomId !== p.roomId) return;
        const t = performance.now();
        for (const [eventId, byType] of Object.entries(event.getContent() ?? {})) {
            for (const [type, byUser] of Object.entries(byType ?? {})) {
                for (const [userId, receipt] of Object.entries(byUser ?? {})) {
                    p.receipts.push({ t, eventId, type, userId, threadId: receipt?.thread_id });
                }
            }
        }
    });
}

async function startParticipant(p) {
    p.client = sdk.createClient({
        baseUrl: BASE_URL,
        userId: p.creds.userId,
        accessToken: p.creds.accessToken,
        deviceId: p.creds.deviceId,
        fetchFn: wireRecorder(p),
    });
    attachListeners(p);
    // threadSupport: the SDK keeps Thread objects, sends threaded receipts and asks /sync for
    // unread_thread_notifications, as Element does.
    await call(p.client.startClient({ initialSyncLimit: 50, threadSupport: true }), `${p.name}: startClient`);
    await observe(
        () => p.prepared,
        `${p.name}: sync state PREPARED`,
        () => `sync state ${p.lastSyncState}${p.lastSyncError ? ", last error: " + p.lastSyncError : ""}`,
        REQUEST_TIMEOUT_MS,
    );
}

const room = (p) => p.client.getRoom(p.roomId);
const eventIn = (p, eventId) => room(p)?.findEventById(eventId);

async function sendText(p, body) {
    const res = await call(p.client.sendTextMessage(p.roomId, body), `${p.name}: send "${body}"`);
    if (typeof res?.event_id !== "string") throw new FatalError(`${p.name}: send "${body}" returned no event_id: ${safeJson(res)}`);
    return res.event_id;
}

/** Waits until `p`'s client has the event (remote echo, not a local echo) in its room. */
async function waitForEvent(p, eventId, what) {
    await observe(
        () => {
            const e = eventIn(p, eventId);
            return e && !e.status;
        },
        `${p.name}: ${what} (${eventId}) arriving through /sync`,
        () => `sync state ${p.lastSyncState}${p.lastSyncError ? ", last error: " + p.lastSyncError : ""}`,
    );
    return eventIn(p, eventId);
}

function describeReceipts(p, eventId) {
    const ev = eventIn(p, eventId);
    return safeJson({
        receiptsForEvent: ev ? room(p).getReceiptsForEvent(ev) : "(event not in the room)",
        receiptEvents: p.receipts.slice(-10),
    });
}

/** The server's notification counts for the room in the newest raw /sync response of `p`
 *  that had the room and arrived after `after` (performance.now() time). */
function wireCountsAfter(p, after) {
    const r = [...p.wire].reverse().find((w) => w.t > after && w.join.unread_notifications);
    return r ? { unread: r.join.unread_notifications, threads: r.join.unread_thread_notifications ?? {} } : null;
}

// ---------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------
async function scenario() {
    setStep("setup: start server, register alice and bob, a DM, messages to search for later");
    startServer();
    const versions = await waitForVersions();
    out(`  server answers /versions: ${safeJson(versions.versions ?? [])}`);
    const suffix = Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
    const alice = newParticipant("alice", await register(`alice_${suffix}`));
    const bob = newParticipant("bob", await register(`bob_${suffix}`));
    alice.other = bob;
    bob.other = alice;
    const A = alice.creds.userId;
    const B = bob.creds.userId;
    await Promise.all([startParticipant(alice), startParticipant(bob)]);
    const created = await call(
        alice.client.createRoom({ is_direct: true, invite: [B], preset: "trusted_private_chat" }),
        "alice: createRoom (DM)",
    );
    const roomId = created?.room_id;
    if (typeof roomId !== "string") throw new FatalError(`createRoom returned no room_id: ${safeJson(created)}`);
    alice.roomId = bob.roomId = roomId;
    out(`  ${A}, ${B}, room ${roomId}`);
    await observe(() => room(bob)?.getMyMembership() === "invite", "bob: the invite arriving through /sync");
    await call(bob.client.joinRoom(roomId), "bob: joinRoom");
    await observe(() => room(alice)?.getMember(B)?.membership === "join", "alice: bob's join arriving through /sync");
    // A distinctive word in an old message, found in step 6 with the messages around it.
    const word = `zanzibar${suffix}`;
    const searchBefore = "an ordinary remark before the search target";
    const searchTarget = `the secret word is ${word} remember it`;
    const searchAfter = "an ordinary remark after the search target";
    const searchIds = [];
    for (const body of [searchBefore, searchTarget, searchAfter]) searchIds.push(await sendText(alice, body));
    await waitForEvent(bob, searchIds[2], "alice's third message");
    setupDone = true;

    const bobMember = () => room(alice)?.getMember(B);

    // 1. Typing: B types, A sees it through RoomMember.typing and RoomMemberEvent.Typing.
    await step(STEPS[0], async () => {
        if (bobMember()?.typing) fail("alice sees bob typing before he started");
        let n = alice.typing.length;
        await call(bob.client.sendTyping(roomId, true, 30_000), "bob: PUT /typing (typing: true, timeout 30000)");
        await observe(
            () => bobMember()?.typing === true && alice.typing.slice(n).some((o) => o.userId === B && o.typing),
            "alice: RoomMemberEvent.Typing with bob typing after his PUT /typing {typing: true}",
            () => `member.typing=${bobMember()?.typing}, events ${safeJson(alice.typing.slice(n))}`,
        );
        const typers = room(alice).getMembers().filter((m) => m.typing).map((m) => m.userId);
        if (typers.length !== 1 || typers[0] !== B) fail(`alice's room shows typing members ${safeJson(typers)}, expected only bob`);
        n = alice.typing.length;
        await call(bob.client.sendTyping(roomId, false), "bob: PUT /typing (typing: false)");
        await observe(
            () => bobMember()?.typing === false && alice.typing.slice(n).some((o) => o.userId === B && !o.typing),
            "alice: bob stops typing after his PUT /typing {typing: false}",
            () => `member.typing=${bobMember()?.typing}, events ${safeJson(alice.typing.slice(n))}`,
        );
        // A typing notification ends by itself when its timeout runs out.
        n = alice.typing.length;
        await call(bob.client.sendTyping(roomId, true, 1000), "bob: PUT /typing (typing: true, timeout 1000)");
        const tSent = performance.now();
        await observe(
            () => alice.typing.slice(n).some((o) => o.userId === B && o.typing),
            "alice: bob typing again (timeout 1000 ms)",
            () => `events ${safeJson(alice.typing.slice(n))}`,
        );
        await observe(
            () => bobMember()?.typing === false,
            "alice: bob's typing (timeout 1000 ms, never stopped) expiring by itself",
            () => `member.typing=${bobMember()?.typing} ${Math.round(performance.now() - tSent)} ms after the PUT`,
            10_000,
        );
        const expiredAfter = alice.typing.slice(n).find((o) => o.userId === B && !o.typing)?.t - tSent;
        if (expiredAfter < 900) fail(`bob's typing with timeout 1000 ms ended after only ${Math.round(expiredAfter)} ms`);
        out(`  typing with timeout 1000 ms expired after ${Math.round(expiredAfter)} ms`);
    });

    // 2. Delivered, then read: two ticks.
    const original = "hello bob, how are you?";
    let msgId = null;
    await step(STEPS[1], async () => {
        msgId = await sendText(alice, original);
        await waitForEvent(bob, msgId, "alice's message");
        const deliveredBy = () => room(alice).getReadReceiptForUserId(B, true, DELIVERED);
        await observe(
            () => {
                const ev = eventIn(alice, msgId);
                return (
                    deliveredBy()?.eventId === msgId &&
                    room(alice)
                        .getReceiptsForEvent(ev)
                        .some((r) => r.type === DELIVERED && r.userId === B)
                );
            },
            `alice: an ${DELIVERED} receipt by bob on her message once bob's client has it`,
            () => describeReceipts(alice, msgId),
        );
        out(`  delivered: alice sees ${DELIVERED} by bob on ${msgId}`);
        // Delivered is not read (through the SDK's receipt-type-aware APIs).
        const evA = eventIn(alice, msgId);
        const readByBob = () => room(alice).getReadReceiptForUserId(B, true, sdk.ReceiptType.Read)?.eventId;
        if (room(alice).getUsersReadUpTo(evA).includes(B) || readByBob() === msgId || room(alice).getEventReadUpTo(B) === msgId) {
            fail(`alice sees bob as having read her message before bob sent a read receipt: ${describeReceipts(alice, msgId)}`);
        }
        if (room(alice).hasUserReadEvent(B, msgId)) {
            // matrix-js-sdk's RoomReceipts (behind hasUserReadEvent) takes a receipt of any type
            // in m.receipt as "read"; the type-aware APIs above tell delivered from read.
            note(`js-sdk: room.hasUserReadEvent(bob, msg) is already true with only an ${DELIVERED} receipt (RoomReceipts ignores the receipt type)`);
        }
        const tRead = performance.now();
        await call(bob.client.sendReadReceipt(eventIn(bob, msgId)), "bob: POST /receipt/m.read");
        await observe(
            () =>
                room(alice).getUsersReadUpTo(evA).includes(B) &&
                room(alice).hasUserReadEvent(B, msgId) &&
                room(alice).getEventReadUpTo(B) === msgId &&
                // A real receipt from the server, not one the SDK synthesized.
                readByBob() === msgId &&
                alice.receipts.some((r) => r.t > tRead && r.type === "m.read" && r.userId === B && r.eventId === msgId),
            "alice: bob's m.read receipt on her message",
            () => describeReceipts(alice, msgId),
        );
        out(`  read: alice sees m.read by bob on ${msgId}`);
        // Delivered receipts are shown to the others only (spec/extensions.md).
        if (room(bob).getReadReceiptForUserId(B, true, DELIVERED)) {
            fail(`bob's own client got his ${DELIVERED} receipt (they are shown to the other members only): ${describeReceipts(bob, msgId)}`);
        }
    });

    // 3. Edit: both clients show the new body.
    const edited = "hello bob, how are you doing?";
    let editId = null;
    await step(STEPS[2], async () => {
        if (!msgId) throw new FatalError("no message from step 2 to edit");
        const res = await call(
            alice.client.sendEvent(roomId, sdk.EventType.RoomMessage, {
                msgtype: sdk.MsgType.Text,
                body: `* ${edited}`,
                "m.new_content": { msgtype: sdk.MsgType.Text, body: edited },
                "m.relates_to": { rel_type: sdk.RelationType.Replace, event_id: msgId },
            }),
            "alice: send the m.replace edit",
        );
        editId = res?.event_id;
        for (const p of [alice, bob]) {
            await waitForEvent(p, editId, "alice's edit");
            await observe(
                () => {
                    const ev = eventIn(p, msgId);
                    return ev?.replacingEventId() === editId && ev.replacingEvent() && ev.getContent()?.body === edited;
                },
                `${p.name}: alice's message shown with the edited body`,
                () => {
                    const ev = eventIn(p, msgId);
                    return safeJson({ body: ev?.getContent()?.body, replacingEventId: ev?.replacingEventId() });
                },
            );
            const ev = eventIn(p, msgId);
            if (ev.getOriginalContent()?.body !== original) {
                fail(`${p.name}: the original content of the edited message is ${safeJson(ev.getOriginalContent())}`);
            }
        }
        // The server bundles the edit with the original event (spec: "Server-side aggregation of m.replace").
        const r = await api("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(msgId)}`, {
            token: bob.creds.accessToken,
        });
        const bundled = r.json?.unsigned?.["m.relations"]?.["m.replace"];
        if (r.status !== 200 || bundled?.event_id !== editId) {
            fail(
                `GET /rooms/{roomId}/event/{eventId} of the edited message: unsigned["m.relations"]["m.replace"] should name the edit ${editId}; got HTTP ${r.status} ${r.text.slice(0, 400)}`,
            );
        }
        out(`  both clients show "${edited}" (edit ${editId})`);
    });

    // 4. Reaction: B reacts with a thumbs-up, A's relations container has it.
    let reactionId = null;
    await step(STEPS[3], async () => {
        if (!msgId) throw new FatalError("no message from step 2 to react to");
        const res = await call(
            bob.client.sendEvent(roomId, sdk.EventType.Reaction, {
                "m.relates_to": { rel_type: sdk.RelationType.Annotation, event_id: msgId, key: THUMBS_UP },
            }),
            "bob: send the m.reaction",
        );
        reactionId = res?.event_id;
        const annotations = () =>
            room(alice)
                .relations.getChildEventsForEvent(msgId, sdk.RelationType.Annotation, sdk.EventType.Reaction)
                ?.getSortedAnnotationsByKey();
        await observe(
            () =>
                (annotations() ?? []).some(
                    ([key, events]) => key === THUMBS_UP && [...events].some((e) => e.getId() === reactionId && e.getSender() === B),
                ),
            `alice: bob's ${THUMBS_UP} reaction in room.relations for her message`,
            () => safeJson((annotations() ?? []).map(([k, evs]) => [k, [...evs].map((e) => e.getId())])),
        );
        const keys = annotations().map(([k, evs]) => `${k}x${evs.size}`);
        if (keys.length !== 1) fail(`alice's annotations on her message: ${safeJson(keys)}, expected only ${THUMBS_UP}x1`);
        // The server's /relations (through the SDK's client.relations).
        const rel = await call(
            alice.client.relations(roomId, msgId, sdk.RelationType.Annotation, sdk.EventType.Reaction),
            "alice: GET /relations/{eventId}/m.annotation/m.reaction",
        );
        const relIds = (rel?.events ?? []).map((e) => e.getId());
        if (relIds.length !== 1 || relIds[0] !== reactionId) {
            fail(`GET /relations/${msgId}/m.annotation/m.reaction returned ${safeJson(relIds)}, expected exactly [${reactionId}]`);
        }
        out(`  alice sees ${THUMBS_UP} by bob (${reactionId})`);
    });

    // 5. Thread: B replies in a thread on A's message.
    let replyId = null;
    await step(STEPS[4], async () => {
        if (!msgId) throw new FatalError("no message from step 2 to reply to");
        // The SDK adds the m.thread relation (and the reply fallback), as Element does.
        const res = await call(
            bob.client.sendEvent(roomId, msgId, sdk.EventType.RoomMessage, { msgtype: sdk.MsgType.Text, body: "fine, thanks (in a thread)" }),
            "bob: send a thread reply",
        );
        replyId = res?.event_id;
        const thread = () => room(alice).getThread(msgId);
        await observe(
            () => {
                const t = thread();
                return t && t.length >= 1 && t.replyToEvent?.getId() === replyId && t.events.some((e) => e.getId() === replyId);
            },
            "alice: a Thread on her message with bob's reply",
            () => {
                const t = thread();
                return t
                    ? safeJson({ length: t.length, replyToEvent: t.replyToEvent?.getId(), events: t.events.map((e) => e.getId()) })
                    : "no Thread object";
            },
        );
        const t = thread();
        if (t.length !== 1) fail(`alice's Thread on her message has length ${t.length}, expected 1`);
        const rel = eventIn(alice, replyId)?.getRelation?.() ?? t.events.find((e) => e.getId() === replyId)?.getRelation();
        if (rel?.rel_type !== "m.thread" || rel?.event_id !== msgId) fail(`bob's reply has relation ${safeJson(rel)}, expected m.thread to ${msgId}`);
        // The server's thread list, with the thread's bundled summary.
        for (const [p, include] of [
            [alice, "all"],
            [alice, "participated"],
            [bob, "participated"],
        ]) {
            const url = `/_matrix/client/v1/rooms/${encodeURIComponent(roomId)}/threads?include=${include}`;
            const r = await api("GET", url, { token: p.creds.accessToken });
            const root = r.json?.chunk?.find?.((e) => e.event_id === msgId);
            const summary = root?.unsigned?.["m.relations"]?.["m.thread"];
            if (r.status !== 200 || !root) {
                fail(`GET ${url} as ${p.name} does not list the thread root ${msgId}: HTTP ${r.status} ${r.text.slice(0, 400)}`);
            } else if (summary?.count !== 1 || summary?.latest_event?.event_id !== replyId || summary?.current_user_participated !== true) {
                fail(
                    `GET ${url} as ${p.name}: the root's unsigned["m.relations"]["m.thread"] is ${safeJson(summary)}, expected count 1, latest_event ${replyId}, current_user_participated true`,
                );
            }
        }
        out(`  alice has a Thread on ${msgId} with bob's reply ${replyId}; GET /threads lists it`);
    });

    // 6. Search for the word of an old message, with its context.
    await step(STEPS[5], async () => {
        const res = await call(
            alice.client.searchRoomEvents({ term: word, filter: { rooms: [roomId] } }),
            `alice: POST /search for "${word}"`,
        );
        const results = res?.results ?? [];
        const hit = results.find((r) => r.context?.getEvent()?.getId() === searchIds[1]);
        if (!hit) {
            throw new FatalError(
                `POST /search for "${word}" did not find ${searchIds[1]}: ${results.length} results ${safeJson(results.map((r) => r.context?.getEvent()?.getId()))}`,
            );
        }
        if (results.length !== 1) fail(`POST /search for "${word}" returned ${results.length} results, expected 1`);
        if (hit.context.getEvent().getContent()?.body !== searchTarget) {
            fail(`search result body is ${safeJson(hit.context.getEvent().getContent())}`);
        }
        const tl = hit.context.getTimeline();
        const i = hit.context.ourEventIndex;
        const before = tl.slice(0, i).map((e) => e.getId());
        const after = tl.slice(i + 1).map((e) => e.getId());
        if (before.length !== 1 || before[0] !== searchIds[0] || after.length !== 1 || after[0] !== searchIds[2]) {
            fail(
                `search result context (before_limit 1, after_limit 1): events_before ${safeJson(before)}, events_after ${safeJson(after)}; expected [${searchIds[0]}] and [${searchIds[2]}]`,
            );
        }
        out(`  found "${word}" with ${before.length} event(s) before and ${after.length} after`);
    });

    // 7. Unread counts: B sends 3 messages while A does not read; A reads, the count drops to 0.
    await step(STEPS[6], async () => {
        const total = () => room(alice).getUnreadNotificationCount(sdk.NotificationCountType.Total);
        const main = () => room(alice).getRoomUnreadNotificationCount(sdk.NotificationCountType.Total);
        const inThread = () => (msgId ? room(alice).getThreadUnreadNotificationCount(msgId, sdk.NotificationCountType.Total) : 0);
        const counts = () =>
            safeJson({
                total: total(),
                main: main(),
                thread: inThread(),
                highlight: room(alice).getUnreadNotificationCount(sdk.NotificationCountType.Highlight),
                lastWire: alice.wire.length
                    ? {
                          unread_notifications: alice.wire.at(-1).join.unread_notifications,
                          unread_thread_notifications: alice.wire.at(-1).join.unread_thread_notifications,
                      }
                    : null,
            });
        // Before: bob's thread reply notifies alice in the thread; nothing of bob's in the main timeline does
        // (his reaction does not notify under the default push rules).
        if (replyId) {
            await observe(() => inThread() === 1, "alice: 1 unread notification in the thread (bob's reply)", counts);
        }
        if (main() !== 0) fail(`before bob's messages alice's main-timeline notification count is ${main()}, expected 0: ${counts()}`);
        const base = total();
        const ids = [];
        for (let i = 1; i <= 3; i++) ids.push(await sendText(bob, `unread message ${i} of 3`));
        await waitForEvent(alice, ids[2], "bob's third unread message");
        await observe(() => total() >= base + 3 && main() >= 3, "alice: unread notification count up by 3", counts);
        if (main() !== 3) fail(`alice's main-timeline notification count is ${main()} after bob's 3 messages, expected 3: ${counts()}`);
        if (room(alice).getUnreadNotificationCount(sdk.NotificationCountType.Highlight) !== 0) {
            fail(`alice's highlight count is not 0 (no mention was sent): ${counts()}`);
        }
        out(`  after bob's 3 messages alice's counts: ${counts()}`);
        const latest = eventIn(alice, ids[2]);
        // A threaded receipt in the main timeline reads the main timeline only (spec: "Threaded read receipts").
        let tR = performance.now();
        await call(alice.client.sendReadReceipt(latest), "alice: POST /receipt/m.read (thread_id main) on bob's latest message");
        await observe(
            () => main() === 0 && wireCountsAfter(alice, tR)?.unread?.notification_count === 0,
            "alice: main-timeline count back to 0 after her threaded (main) receipt",
            counts,
        );
        if (replyId && inThread() !== 1) fail(`a receipt with thread_id "main" changed the thread's count to ${inThread()}: ${counts()}`);
        // An unthreaded receipt on the latest event reads everything up to it, threads included.
        tR = performance.now();
        await call(
            alice.client.sendReadReceipt(latest, sdk.ReceiptType.Read, true),
            "alice: POST /receipt/m.read (unthreaded) on bob's latest message",
        );
        await observe(
            () => {
                const w = wireCountsAfter(alice, tR);
                return (
                    total() === 0 &&
                    w?.unread?.notification_count === 0 &&
                    Object.values(w.threads).every((c) => (c?.notification_count ?? 0) === 0)
                );
            },
            "alice: total unread count back to 0 after her unthreaded receipt on the latest event",
            counts,
        );
        out(`  after alice's receipt: ${counts()}`);
    });

    // 8. Latency of ephemeral events: from the sender's HTTP call returning to the other client
    //    observing the change (0 when the /sync arrived before the HTTP response was processed).
    await step(STEPS[7], async () => {
        for (let i = 0; i < LATENCY_ROUNDS; i++) {
            const typing = i % 2 === 0;
            const n = alice.typing.length;
            await call(bob.client.sendTyping(roomId, typing, 30_000), `bob: PUT /typing (typing: ${typing})`);
            const tRet = performance.now();
            await observe(
                () => alice.typing.slice(n).some((o) => o.userId === B && o.typing === typing),
                `alice: bob's typing=${typing} (latency round ${i + 1})`,
                () => safeJson(alice.typing.slice(n)),
            );
            const seen = alice.typing.slice(n).find((o) => o.userId === B && o.typing === typing);
            latency.typing.push(Math.max(0, seen.t - tRet));
        }
        if (bobMember()?.typing) await call(bob.client.sendTyping(roomId, false), "bob: PUT /typing (typing: false)");
        for (let i = 0; i < LATENCY_ROUNDS; i++) {
            const nA = alice.receipts.length;
            const id = await sendText(alice, `latency ping ${i + 1}`);
            const tSent = performance.now();
            await waitForEvent(bob, id, `latency ping ${i + 1}`);
            const nB = alice.receipts.length;
            await call(bob.client.sendReadReceipt(eventIn(bob, id)), "bob: POST /receipt/m.read");
            const tRet = performance.now();
            const readSeen = () => alice.receipts.slice(nB).find((r) => r.type === "m.read" && r.userId === B && r.eventId === id);
            const deliveredSeen = () => alice.receipts.slice(nA).find((r) => r.type === DELIVERED && r.userId === B && r.eventId === id);
            await observe(() => readSeen(), `alice: bob's m.read on latency ping ${i + 1}`, () => describeReceipts(alice, id));
            await observe(() => deliveredSeen(), `alice: bob's ${DELIVERED} on latency ping ${i + 1}`, () => describeReceipts(alice, id));
            latency.receipt.push(Math.max(0, readSeen().t - tRet));
            latency.delivered.push(Math.max(0, deliveredSeen().t - tSent));
        }
        // The figures are printed with the summary (also when this step failed midway).
    });
}

function latencyLine() {
    const f = (xs) => `p50=${fmt(percentile(xs, 50))} p99=${fmt(percentile(xs, 99))} ms (n=${xs.length})`;
    return (
        `ephemeral latency typing ${f(latency.typing)}; receipt ${f(latency.receipt)}; ` +
        `delivered (send -> sender sees ${DELIVERED}) ${f(latency.delivered)}`
    );
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------
await run(scenario, {
    stopClients: () => participants.forEach((p) => p.client?.stopClient()),
    summary: (ms) => {
        for (const s of STEPS) {
            if (!stepResults.has(s)) out(`  not reached: ${s}`);
        }
        return `${latencyLine()}\nconformance js-sdk messenger: ${STEPS.length} steps${setupDone ? "" : " (setup failed)"}, ${ms} ms`;
    },
    results: (failed) => {
        const passed = STEPS.filter((s) => stepResults.get(s) === true).length;
        // A problem outside the steps (setup, server shutdown) fails the run as one more check.
        return { passed, failed: STEPS.length - passed + (failed && passed === STEPS.length ? 1 : 0) };
    },
});
