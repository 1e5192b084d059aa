# Portier container image.
#   docker build -t portier .
#   docker run --rm -p 5060:5060/udp -p 5060:5060/tcp \
#     -v "$PWD/portier.yaml:/etc/portier/portier.yaml:ro" portier
# The image's built-in /etc/portier/portier.yaml is conf/portier.yaml, which
# listens on 127.0.0.1 only (inside the container): mount your own config with
# udp:0.0.0.0:5060 and tcp:0.0.0.0:5060 to be reachable from outside.

# ---- build: compile TypeScript with the dev dependencies
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
# Everything .dockerignore lets through: sources, tsconfig*.json, conf/.
COPY . .
RUN npm run build

# ---- runtime: production dependencies and the compiled code only
FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY conf ./conf
COPY LICENSE README.md ./
COPY conf/portier.yaml conf/users /etc/portier/
USER node
# 5060 SIP over UDP and TCP, 5061 SIP over TLS (later), 9090 metrics and /healthz (later).
EXPOSE 5060/udp 5060/tcp 5061/tcp 9090/tcp
# A SIP OPTIONS over UDP to 127.0.0.1:5060 must get "SIP/2.0 200" within 2 s.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "/app/dist/src/cli/healthcheck.js", "127.0.0.1", "5060"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/dist/src/cli/main.js"]
CMD ["--config", "/etc/portier/portier.yaml"]
