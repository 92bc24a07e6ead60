// End-to-end encryption conformance scenario for Corvid, driven by matrix-js-sdk with its Rust
// crypto (README.md, "The e2ee scenario"): cross-signing and secret storage bootstrapped for
// alice and bob, an encrypted DM decrypted both ways, bob's second device getting new messages
// and (from the key backup) old ones, that device verified by cross-signing, and a database
// that holds ciphertext only.
//
// Usage (normally via run.sh):
//   node e2ee.mjs <corvid-binary> <workdir> <config-file> <port>

import fs from "node:fs";
import path from "node:path";
import { DatabaseSync } from "node:sqlite";

import {
    BASE_URL,
    FatalError,
    PASSWORD,
    WORKDIR,
    api,
    call,
    clearBody,
    expectDecrypted,
    note,
    out,
    problem,
    register,
    run,
    safeJson,
    sdk,
    setStep,
    startCryptoClient,
    startServer,
    stopServer,
    uploadSigningKeysWithPassword,
    waitForVersions,
    waitUntil,
} from "./lib.mjs";

const OBSERVE_TIMEOUT_MS = 30_000;
const MESSAGES_EACH_WAY = 3;
const clients = [];
const markers = []; // every plaintext body sent in the encrypted room

const observe = (cond, what, ms = OBSERVE_TIMEOUT_MS) => waitUntil(cond, ms, what, 100);

/** observe(), and on failure the server's /keys/query answer for `userId` as `observer` sees it. */
async function observeOrExplain(cond, what, observer, userId) {
    try {
        await observe(cond, what);
    } catch (e) {
        const r = await api("POST", "/_matrix/client/v3/keys/query", {
            token: observer.client.getAccessToken(),
            body: { device_keys: { [userId]: [] } },
        });
        throw new FatalError(`${e.message}; /keys/query for ${userId}: HTTP ${r.status} ${r.text}`);
    }
}

const marker = (who) => `${who}-secret-${Math.random().toString(36).slice(2, 12)}`;

// ---------------------------------------------------------------------------
// Devices: a client with Rust crypto, and the user's secret-storage keys it may use
// ---------------------------------------------------------------------------

/** One user's secret storage keys (key id -> private key), shared by the user's devices, as a
 *  user who types in their recovery key on each new device. */
function newUser(name, creds) {
    return { name, creds, secretKeys: new Map() };
}

async function startDevice(user, label, creds) {
    const options = {
        baseUrl: BASE_URL,
        userId: creds.userId,
        accessToken: creds.accessToken,
        deviceId: creds.deviceId,
        cryptoCallbacks: {
            getSecretStorageKey: async ({ keys }) => {
                const id = Object.keys(keys).find((k) => user.secretKeys.has(k));
                return id ? [id, user.secretKeys.get(id)] : null;
            },
            cacheSecretStorageKey: (keyId, _info, key) => user.secretKeys.set(keyId, key),
        },
    };
    const client = await startCryptoClient(label, options, clients);
    return { client, crypto: client.getCrypto(), label, deviceId: creds.deviceId, user };
}

/** Cross-signing keys (the first upload needs no password; a later one re-authenticates with
 *  it, as Element asks the user) and secret storage with a new key backup. */
async function bootstrap(device) {
    const { client, crypto, user } = device;
    await call(
        crypto.bootstrapCrossSigning({
            authUploadDeviceSigningKeys: uploadSigningKeysWithPassword(client),
        }),
        `${device.label}: bootstrapCrossSigning`,
    );
    const recoveryKey = await crypto.createRecoveryKeyFromPassphrase();
    await call(
        crypto.bootstrapSecretStorage({
            createSecretStorageKey: async () => recoveryKey,
            setupNewSecretStorage: true,
            setupNewKeyBackup: true,
        }),
        `${device.label}: bootstrapSecretStorage`,
    );
    if (!user.secretKeys.size) {
        throw new FatalError(`${device.label}: no secret storage key was cached by bootstrapSecretStorage`);
    }
    if (!(await crypto.isCrossSigningReady())) problem(`${device.label}: isCrossSigningReady() is false after bootstrap`);
    const status = await crypto.getCrossSigningStatus();
    if (!status.publicKeysOnDevice || !status.privateKeysInSecretStorage) {
        problem(`${device.label}: cross-signing status after bootstrap: ${safeJson(status)}`);
    }
    if (!(await crypto.getActiveSessionBackupVersion())) problem(`${device.label}: no active key backup after bootstrap`);
}

async function send(device, roomId, body) {
    markers.push(body);
    const res = await call(device.client.sendTextMessage(roomId, body), `${device.label}: send "${body}"`);
    return res.event_id;
}

async function knowsDevice(observer, userId, deviceId) {
    const devices = await observer.crypto.getUserDeviceInfo([userId], true);
    return devices.get(userId)?.has(deviceId) ?? false;
}

// ---------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------
async function scenario() {
    setStep("start the server");
    startServer();
    await waitForVersions();
    const suffix = Math.random().toString(36).slice(2, 8);

    setStep("alice and bob log in with Rust crypto");
    const alice = newUser("alice", await register(`alice_${suffix}`));
    const bob = newUser("bob", await register(`bob_${suffix}`));
    const a1 = await startDevice(alice, "alice", alice.creds);
    const b1 = await startDevice(bob, "bob", bob.creds);

    setStep("cross-signing and secret storage for both");
    await bootstrap(a1);
    await bootstrap(b1);

    setStep("alice opens an encrypted DM with bob");
    const { room_id: roomId } = await call(
        a1.client.createRoom({
            is_direct: true,
            preset: "trusted_private_chat",
            invite: [bob.creds.userId],
            initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
        }),
        "alice: createRoom (encrypted)",
    );
    await observe(() => b1.client.getRoom(roomId)?.getMyMembership() === "invite", "bob: the invite");
    await call(b1.client.joinRoom(roomId), "bob: join");
    await observe(() => a1.client.getRoom(roomId)?.getMember(bob.creds.userId)?.membership === "join", "alice: bob joined");

    setStep("each sees the other's device signed by its owner's cross-signing key");
    for (const [observer, other] of [[a1, bob], [b1, alice]]) {
        await observeOrExplain(async () => {
            const devices = await observer.crypto.getUserDeviceInfo([other.creds.userId], true);
            const own = await observer.crypto.getDeviceVerificationStatus(other.creds.userId, other.creds.deviceId);
            return devices.get(other.creds.userId)?.has(other.creds.deviceId) && own?.signedByOwner === true;
        }, `${observer.label}: sees ${other.name}'s device signed by ${other.name}'s own cross-signing key`, observer, other.creds.userId);
    }

    setStep("messages both ways, each decrypted by the other");
    const old = [];
    for (let i = 0; i < MESSAGES_EACH_WAY; i++) {
        const fromAlice = marker("alice");
        old.push({ id: await send(a1, roomId, fromAlice), body: fromAlice });
        const fromBob = marker("bob");
        old.push({ id: await send(b1, roomId, fromBob), body: fromBob });
    }
    for (const { id, body } of old) {
        await expectDecrypted(body.startsWith("alice") ? b1 : a1, roomId, id, body);
    }
    out(`  ${old.length} messages decrypted by the other side`);

    setStep("bob's first device backs up the room keys");
    const version = await b1.crypto.getActiveSessionBackupVersion();
    await observe(async () => {
        const r = await api("GET", `/_matrix/client/v3/room_keys/keys?version=${encodeURIComponent(version)}`, {
            token: bob.creds.accessToken,
        });
        return Object.keys(r.json?.rooms?.[roomId]?.sessions ?? {}).length >= 2;
    }, "the backup holds the room's sessions from alice and from bob");

    setStep("bob logs in on a second device");
    const login = await api("POST", "/_matrix/client/v3/login", {
        body: { type: "m.login.password", identifier: { type: "m.id.user", user: bob.creds.userId }, password: PASSWORD },
    });
    if (login.status !== 200) throw new FatalError(`bob: second login: HTTP ${login.status} ${login.text.slice(0, 300)}`);
    const b2 = await startDevice(bob, "bob's 2nd device", {
        userId: login.json.user_id,
        accessToken: login.json.access_token,
        deviceId: login.json.device_id,
    });
    await observe(() => knowsDevice(a1, bob.creds.userId, b2.deviceId), "alice: knows bob's new device");
    const fresh = marker("alice");
    const freshId = await send(a1, roomId, fresh);
    await expectDecrypted(b2, roomId, freshId, fresh);
    await expectDecrypted(b1, roomId, freshId, fresh);

    setStep("old messages on the second device, from the key backup");
    const before = [];
    for (const { id } of old) before.push(await clearBody(b2, roomId, id));
    if (before.every((b) => b !== null)) note("bob's second device could decrypt old messages before restoring the backup");
    await call(b2.crypto.loadSessionBackupPrivateKeyFromSecretStorage(), "bob 2: load the backup key from secret storage");
    await call(b2.crypto.checkKeyBackupAndEnable(), "bob 2: checkKeyBackupAndEnable");
    const restored = await call(b2.crypto.restoreKeyBackup(), "bob 2: restoreKeyBackup");
    out(`  restored ${restored?.imported ?? "?"} of ${restored?.total ?? "?"} keys from backup version ${version}`);
    if (!(restored?.imported >= 2)) problem(`restoreKeyBackup imported ${safeJson(restored)}, expected the room's 2 sessions`);
    for (const { id, body } of old) await expectDecrypted(b2, roomId, id, body);

    setStep("bob's second device is verified by cross-signing");
    await observe(() => knowsDevice(b1, bob.creds.userId, b2.deviceId), "bob 1: knows the new device");
    await call(b1.crypto.crossSignDevice(b2.deviceId), "bob 1: crossSignDevice");
    for (const observer of [a1, b1]) {
        await observe(async () => {
            await observer.crypto.getUserDeviceInfo([bob.creds.userId], true);
            const status = await observer.crypto.getDeviceVerificationStatus(bob.creds.userId, b2.deviceId);
            return status?.signedByOwner === true;
        }, `${observer.label}: bob's second device signed by bob's self-signing key`);
    }
    const own = await b1.crypto.getDeviceVerificationStatus(bob.creds.userId, b2.deviceId);
    if (!own?.crossSigningVerified) problem(`bob 1: second device status ${safeJson(own)}, expected crossSigningVerified`);

    setStep("a plaintext control room");
    const { room_id: plainRoom } = await call(a1.client.createRoom({ preset: "private_chat" }), "alice: createRoom (plain)");
    const control = marker("control");
    await call(a1.client.sendTextMessage(plainRoom, control), "alice: send in the plain room");

    setStep("the database holds ciphertext only");
    for (const c of clients) c.stopClient();
    await stopServer();
    checkDatabase(roomId, control);
}

/** Every timeline event of the encrypted room is m.room.encrypted, and no plaintext body is
 *  anywhere in the database files, while the plain room's body is (the search works). */
function checkDatabase(roomId, control) {
    const file = path.join(WORKDIR, "corvid.db");
    const db = new DatabaseSync(file, { readOnly: true });
    const rows = db.prepare("SELECT event_type, COUNT(*) AS n FROM events WHERE room_id = ? AND state_key IS NULL GROUP BY event_type").all(roomId);
    db.close();
    const types = Object.fromEntries(rows.map((r) => [r.event_type, Number(r.n)]));
    const expected = markers.length;
    if (Object.keys(types).some((t) => t !== "m.room.encrypted" && t !== "m.receipt")) {
        problem(`non-state events of the encrypted room by type: ${safeJson(types)}; expected m.room.encrypted only`);
    }
    if ((types["m.room.encrypted"] ?? 0) < expected) {
        problem(`${types["m.room.encrypted"] ?? 0} m.room.encrypted events stored, expected at least ${expected}`);
    }
    const files = fs.readdirSync(WORKDIR).filter((f) => f.startsWith("corvid.db"));
    const bytes = Buffer.concat(files.map((f) => fs.readFileSync(path.join(WORKDIR, f))));
    if (!bytes.includes(Buffer.from(control))) {
        problem(`the plaintext control message is not found in ${files.join(", ")}: the search cannot be trusted`);
    }
    const leaked = markers.filter((m) => bytes.includes(Buffer.from(m)));
    if (leaked.length) problem(`plaintext of encrypted messages found in the database: ${leaked.join(", ")}`);
    out(`  ${types["m.room.encrypted"] ?? 0} m.room.encrypted events stored; none of ${markers.length} plaintexts in ${files.join(", ")} (${bytes.length} bytes); the control message is`);
}

await run(scenario, {
    stopClients: () => clients.forEach((c) => c.stopClient()),
    summary: (ms) => `conformance js-sdk e2ee: ${markers.length} encrypted messages, ${ms} ms`,
});
