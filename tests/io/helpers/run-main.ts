// Child process for the runMain tests: argv[2] picks how fn ends.
import { runMain, UsageError, UserError } from "../../../lib/io/errors.ts";

const mode = process.argv[2];
await runMain(async () => {
  await Bun.sleep(1);
  if (mode === "user") throw new UserError("model folder checkpoints/x is missing unet/config.json; download it first");
  if (mode === "usage") throw new UsageError("unknown flag --fast");
  if (mode === "bug") throw new TypeError("cannot read properties of undefined");
  if (mode === "string") throw "plain string";
  console.log("ran fine");
});
