# syntax=docker/dockerfile:1
#
# One image with the three binaries (relay, rendezvous, meshup), static
# (CGO_ENABLED=0), on distroless as a non-root user. The relay is the
# default entrypoint:
#
#   docker build -t meshup .
#   docker run --rm -p 8081:8081 -p 4001:4001 -p 4001:4001/udp meshup \
#     --rendezvous https://rendezvous.example --public-url http://relay.example:8081 \
#     --p2p /ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1 \
#     --max-rate 10MB/s --monthly-cap 1TB
#
# The rendezvous:
#
#   docker run --rm -p 8080:8080 -p 3478-3479:3478-3479/udp -p 4001:4001 -p 4001:4001/udp \
#     --entrypoint /usr/local/bin/rendezvous meshup --public-url https://rendezvous.example \
#     --p2p /ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1
#
# libp2p listens on random ports unless --p2p names them: name fixed ones
# and publish them, as above. Relays keep no data on disk; an identity key
# (relay --key-file) needs a volume writable by uid 65532.

FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a change to the code reuses their layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags="-s -w -X main.version=${VERSION}" \
      -o /out/ ./cmd/relay ./cmd/rendezvous ./cmd/meshup

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/relay /out/rendezvous /out/meshup /usr/local/bin/
COPY LICENSE /usr/share/doc/meshup/LICENSE
USER nonroot:nonroot
# relay: HTTP (push and downloads); rendezvous: HTTP and STUN (UDP, the
# port and the next); both: libp2p TCP and QUIC on the port --p2p names.
EXPOSE 8081/tcp 8080/tcp 3478/udp 3479/udp 4001/tcp 4001/udp
ENTRYPOINT ["/usr/local/bin/relay"]
