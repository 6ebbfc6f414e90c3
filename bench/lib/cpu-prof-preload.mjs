// Preloaded into a server under test by `npm run bench -- --profile`
// (NODE_OPTIONS=--import <this file>; Node 20 refuses --cpu-prof in NODE_OPTIONS).
// SIGUSR2 starts the V8 sampling profiler on the main thread (the bench sends
// it when the measured load begins, so start-up does not drown the profile);
// $BENCH_CPU_PROF_DIR/<pid>.cpuprofile is written when the process exits.
import fs from "node:fs";
import inspector from "node:inspector";
import path from "node:path";

const dir = process.env.BENCH_CPU_PROF_DIR;
if (dir) {
  const session = new inspector.Session();
  session.connect();
  let started = false;
  process.on("SIGUSR2", () => {
    if (started) return;
    started = true;
    session.post("Profiler.enable");
    session.post("Profiler.setSamplingInterval", { interval: 500 });
    session.post("Profiler.start");
  });
  // A same-thread session answers synchronously, so this works inside "exit".
  process.on("exit", () => {
    if (!started) return;
    session.post("Profiler.stop", (err, result) => {
      if (err) return;
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, `${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
