// Child process for the atomic-write kill test: slowly replaces argv[2] with argv[3] MiB of 0xAB,
// in 4 MiB chunks with a pause between them, through writeFileAtomic.
import { writeFileAtomic } from "../../../lib/io/atomic.ts";

const [target, mib] = process.argv.slice(2);
if (!target || !mib) throw new Error("usage: slow-writer.ts <target> <MiB>");
const chunk = new Uint8Array(4 << 20).fill(0xab);

async function* slowChunks(): AsyncGenerator<Uint8Array> {
  for (let written = 0; written < Number(mib) << 20; written += chunk.length) {
    yield chunk;
    await Bun.sleep(25);
  }
}

await writeFileAtomic(target, slowChunks());
console.log("finished");
