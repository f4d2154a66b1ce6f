// Starts the Firestore API server (@firestore-emulator/server, installed into .tools/ by `make`) on a port.
// Usage: node scripts/firestore-emulator.mjs PORT   -- prints "ready PORT" once it accepts connections.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(root, ".tools", "package.json"));
const { FirestoreServer } = require("@firestore-emulator/server");

const port = Number(process.argv[2] || 8080);
const server = new FirestoreServer();
await server.start(port);
console.log(`ready ${port}`);
const stop = async () => { try { await server.stop?.(); } finally { process.exit(0); } };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
