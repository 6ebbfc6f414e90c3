# Agora: one image for every service (SERVICES picks what a container serves).
# Build: compile TypeScript, then keep only production dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY gen gen
COPY src src
COPY web web
COPY scripts/build-console.ts scripts/
RUN npm run build && npm run console:build && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production PORT=8080 HOST=0.0.0.0 DATA_DIR=/app/data
COPY --from=build --chown=root:root /app/node_modules node_modules
COPY --from=build --chown=root:root /app/dist dist
COPY --from=build --chown=root:root /app/web/dist web/dist
COPY package.json ./
# The data directory (token signing key) is the only place the server writes.
RUN mkdir -p /app/data && chown node:node /app/data
USER node
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "dist/src/cli/healthcheck.js"]
# Exec form: SIGTERM reaches node directly, which drains before exiting.
CMD ["node", "--enable-source-maps", "dist/src/main.js"]
