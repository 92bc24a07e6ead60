// End-to-end encryption across federation, driven by matrix-js-sdk with its Rust crypto (README.md,
// "The e2ee_federated scenario"): alice on Corvid and bob on another homeserver (Synapse in
// tests/synapse_interop.rs) bootstrap cross-signing; alice opens an encrypted DM with bob and bob
// one with alice; each sees the other's device signed by its owner; messages both ways decrypt on
// the other side, also on a second device each logs in with afterwards.
// Device keys, one-time keys and cross-signing keys cross over federation (/user/keys/query,
// /user/keys/claim, /user/devices), and so do the Olm-encrypted room keys (m.direct_to_device).
//
// Usage (the servers are already running and federate with each other):
//   node e2ee_federated.mjs --servers <corvid-url> <corvid-server-name> <other-url> <other-server-name>
// TLS to a server with a test certificate: NODE_EXTRA_CA_CERTS=<ca.pem>.

import {
    FatalError,
    PASSWORD,
    SERVER_ARGS,
    api,
    call,
    describeError,
    expectDecrypted,
    out,
    problem,
    register,
    run,
    safeJson,
    sdk,
    setStep,
    startCryptoClient,
    uploadSigningKeysWithPassword,
    waitUntil,
} from "./lib.mjs";

const OBSERVE_TIMEOUT_MS = 30_000;
const MESSAGES_EACH_WAY = 3;
const clients = [];
let decrypted = 0;

if (SERVER_ARGS?.length !== 4) {
    process.stderr.write("usage: node e2ee_federated.mjs --servers <corvid-url> <corvid-server-name> <other-url> <other-server-name>\n");
    process.exit(2);
}
const [CORVID_URL, CORVID_NAME, OTHER_URL, OTHER_NAME] = SERVER_ARGS;

const observe = (cond, what, ms = OBSERVE_TIMEOUT_MS) => waitUntil(cond, ms, what, 100);

const marker = (who) => `${who}-secret-${Math.random().toString(36).slice(2, 12)}`;

/** A client with Rust crypto (in-memory store) on the server at `baseUrl`, synced. */
async function startDevice(label, baseUrl, creds) {
    const { userId, accessToken, deviceId } = creds;
    const client = await startCryptoClient(label, { baseUrl, userId, accessToken, deviceId }, clients);
    return { client, crypto: client.getCrypto(), label, creds };
}

/** Cross-signing keys; the upload re-authenticates with the password if the server asks. */
async function bootstrapCrossSigning(device) {
    const { client, crypto } = device;
    await call(
        crypto.bootstrapCrossSigning({
            authUploadDeviceSigningKeys: uploadSigningKeysWithPassword(client),
        }),
        `${device.label}: bootstrapCrossSigning`,
    );
    if (!(await crypto.isCrossSigningReady())) problem(`${device.label}: isCrossSigningReady() is false after bootstrap`);
}

/** Waits until `observer` has `other`'s device, signed by `other`'s self-signing key; on failure,
 *  says what the observer's server answers to /keys/query for `other`. */
async function expectSignedDevice(observer, other) {
    const { userId, deviceId } = other.creds;
    try {
        await observe(async () => {
            const devices = await observer.crypto.getUserDeviceInfo([userId], true);
            const status = await observer.crypto.getDeviceVerificationStatus(userId, deviceId);
            return devices.get(userId)?.has(deviceId) && status?.signedByOwner === true;
        }, `${observer.label}: sees ${other.label}'s device signed by ${other.label}'s cross-signing key`);
    } catch (e) {
        const keys = await observer.client.http
            .authedRequest("POST", "/keys/query", undefined, { device_keys: { [userId]: [] } })
            .catch((err) => describeError(err));
        throw new FatalError(`${e.message}; /keys/query for ${userId} on ${observer.label}'s server: ${safeJson(keys)}`);
    }
}

async function send(device, roomId, body) {
    const res = await call(device.client.sendTextMessage(roomId, body), `${device.label}: send "${body}"`);
    return res.event_id;
}

/** Logs `user` in again on the server at `baseUrl`: a new device. */
async function login(baseUrl, user) {
    const r = await api("POST", "/_matrix/client/v3/login", {
        base: baseUrl,
        body: { type: "m.login.password", identifier: { type: "m.id.user", user }, password: PASSWORD },
    });
    if (r.status !== 200) throw new FatalError(`${user}: login on ${baseUrl}: HTTP ${r.status} ${r.text.slice(0, 300)}`);
    return { userId: r.json.user_id, accessToken: r.json.access_token, deviceId: r.json.device_id };
}

async function knowsDevice(observer, { userId, deviceId }) {
    const devices = await observer.crypto.getUserDeviceInfo([userId], true);
    return devices.get(userId)?.has(deviceId) ?? false;
}

/** `creator` opens an encrypted DM with `guest`, who joins over federation. */
async function encryptedDm(creator, guest) {
    const { room_id: roomId } = await call(
        creator.client.createRoom({
            is_direct: true,
            preset: "trusted_private_chat",
            invite: [guest.creds.userId],
            initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
        }),
        `${creator.label}: createRoom (encrypted, inviting ${guest.label})`,
    );
    await observe(() => guest.client.getRoom(roomId)?.getMyMembership() === "invite", `${guest.label}: the invite`);
    await call(guest.client.joinRoom(roomId), `${guest.label}: join`);
    const joined = () => creator.client.getRoom(roomId)?.getMember(guest.creds.userId)?.membership === "join";
    await observe(joined, `${creator.label}: ${guest.label} joined`);
    await observe(() => guest.client.getRoom(roomId)?.hasEncryptionStateEvent(), `${guest.label}: the room is encrypted`);
    return roomId;
}

/** Each of `senders` sends MESSAGES_EACH_WAY messages; every device in `readers` but the
 *  sender's own decrypts each. */
async function exchange(roomId, senders, readers) {
    const sent = [];
    for (let i = 0; i < MESSAGES_EACH_WAY; i++) {
        for (const sender of senders) {
            const body = marker(sender.label);
            sent.push({ id: await send(sender, roomId, body), body, sender });
        }
    }
    for (const { id, body, sender } of sent) {
        for (const reader of readers.filter((r) => r !== sender)) if (await expectDecrypted(reader, roomId, id, body)) decrypted++;
    }
}

async function scenario() {
    const suffix = Math.random().toString(36).slice(2, 8);

    setStep(`alice on Corvid (${CORVID_NAME}) and bob on ${OTHER_NAME} log in with Rust crypto`);
    const aliceCreds = await register(`alice_${suffix}`, { base: CORVID_URL, serverName: CORVID_NAME });
    const bobCreds = await register(`bob_${suffix}`, { base: OTHER_URL, serverName: OTHER_NAME });
    const alice = await startDevice("alice", CORVID_URL, aliceCreds);
    const bob = await startDevice("bob", OTHER_URL, bobCreds);

    setStep("cross-signing for both");
    await bootstrapCrossSigning(alice);
    await bootstrapCrossSigning(bob);

    setStep("alice opens an encrypted DM with bob, who joins over federation");
    const aliceRoom = await encryptedDm(alice, bob);

    setStep("each sees the other's device signed by its owner's cross-signing key");
    await expectSignedDevice(alice, bob);
    await expectSignedDevice(bob, alice);

    setStep("messages both ways in alice's room, each decrypted by the other");
    await exchange(aliceRoom, [alice, bob], [alice, bob]);

    setStep("bob opens an encrypted DM with alice, who joins over federation");
    const bobRoom = await encryptedDm(bob, alice);
    await exchange(bobRoom, [bob, alice], [alice, bob]);

    setStep("a second device for each, learnt of by the other over federation");
    const alice2 = await startDevice("alice's 2nd device", CORVID_URL, await login(CORVID_URL, aliceCreds.userId));
    const bob2 = await startDevice("bob's 2nd device", OTHER_URL, await login(OTHER_URL, bobCreds.userId));
    await observe(() => knowsDevice(bob, alice2.creds), "bob: knows alice's new device");
    await observe(() => knowsDevice(alice, bob2.creds), "alice: knows bob's new device");

    setStep("new messages in alice's room decrypt on all four devices");
    await exchange(aliceRoom, [alice, bob], [alice, alice2, bob, bob2]);
    out(`  ${decrypted} decryptions of messages from the other server or the sender's other device`);
}

await run(scenario, {
    stopClients: () => clients.forEach((c) => c.stopClient()),
    summary: (ms) => `conformance js-sdk e2ee federated: ${decrypted} decryptions across ${CORVID_NAME} and ${OTHER_NAME}, ${ms} ms`,
});
