import { defineConfig } from "vite";

// The console is built into web/dist, which the Agora server serves at `/`.
// `npm run console:dev` proxies the RPC paths to a server on :8080.
export default defineConfig({
  root: import.meta.dirname,
  base: "/",
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: { outDir: "dist", emptyOutDir: true, target: "es2022", sourcemap: false, chunkSizeWarningLimit: 400 },
  server: { proxy: { "^/(agora|grpc)\\.": "http://127.0.0.1:8080" } },
});
