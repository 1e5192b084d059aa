# Portier container image.
#   docker build -t portier .
#   docker run --rm -p 5060:5060/udp -p 5060:5060/tcp \
#     -v "$PWD/portier.yaml:/etc/portier/portier.yaml:ro" -v "$PWD/users:/etc/portier/users:ro" \
#     -v portier-data:/var/lib/portier portier
# The image's built-in /etc/portier/portier.yaml is conf/portier.yaml, which
# listens on 127.0.0.1 only (inside the container): mount your own config with
# udp:0.0.0.0:5060 and tcp:0.0.0.0:5060 to be reachable from outside.

# Node.js 26, the Active LTS line since October 2026, on Debian 13 (trixie).
# Both stages use the same image, so that the native addon built in the
# first runs in the second. package.json engines (>=20) and better-sqlite3 12
# (Node 20 to 26) allow it; test/ops/packaging.test.ts checks the stages.
# ---- build: compile TypeScript with the dev dependencies. better-sqlite3 is
# a native addon: its install downloads a prebuilt binary or, without one,
# compiles it (python3, make, g++).
FROM node:26-trixie-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
# Everything .dockerignore lets through: sources, tsconfig*.json, conf/.
COPY . .
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# ---- runtime: production dependencies (pruned, native addon built) and the compiled code only
FROM node:26-trixie-slim AS runtime
ENV NODE_ENV=production
# As in systemd/portier.service: memory freed after a burst goes back to the system.
ENV MALLOC_MMAP_THRESHOLD_=131072
WORKDIR /app
COPY package.json package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY conf ./conf
COPY LICENSE README.md ./
COPY conf/portier.yaml conf/users /etc/portier/
# Registrations and bans (storage.path data/portier.db) live in the working
# directory: mount a volume there to keep them across container restarts.
RUN mkdir -p /var/lib/portier && chown node:node /var/lib/portier
WORKDIR /var/lib/portier
VOLUME /var/lib/portier
# The image's unprivileged user (uid 1000), never root.
USER node
# 5060 SIP over UDP and TCP, 5061 SIP over TLS, 9090 metrics, /healthz and /readyz.
EXPOSE 5060/udp 5060/tcp 5061/tcp 9090/tcp
# A SIP OPTIONS over UDP to 127.0.0.1:5060 must get "SIP/2.0 200" within 2 s.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "/app/dist/src/cli/healthcheck.js", "127.0.0.1", "5060"]
# SIGTERM stops gracefully; `docker kill -s HUP` reloads the configuration (README, Operations).
STOPSIGNAL SIGTERM
# --initial-old-space-size=128 as in the portier executable (src/cli/main.ts says why).
ENTRYPOINT ["node", "--initial-old-space-size=128", "/app/dist/src/cli/main.js"]
CMD ["--config", "/etc/portier/portier.yaml"]
