# syntax=docker/dockerfile:1
# The tkms container image: one static binary on an empty base, run as a
# non-root user, with no shell and no package manager.
#
#   docker build --build-arg VERSION=$(git describe --always) -t tkms .
#   buildah bud -t tkms .         # or podman build: no daemon
#
# CI builds the same image without a daemon or a registry (deploy/image,
# go-containerregistry) and runs `tkms version` from its file system.
# Mount the configuration at /etc/tkms/tkms.json and the data directory
# (made by tkms init) at /var/lib/tkms; docs/operations.md.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/tkms ./cmd/tkms
# The CA roots (to fetch token issuers' keys over HTTPS) and the tkms user.
RUN mkdir -p /out/etc/ssl/certs /out/var/lib/tkms \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt \
 && echo 'tkms:x:65532:65532:tkms:/var/lib/tkms:/nonexistent' > /out/etc/passwd \
 && echo 'tkms:x:65532:' > /out/etc/group

FROM scratch
COPY --from=build /out/etc/ /etc/
COPY --from=build --chown=65532:65532 /out/var/lib/tkms /var/lib/tkms
COPY --from=build /out/tkms /usr/local/bin/tkms
USER 65532:65532
WORKDIR /var/lib/tkms
VOLUME /var/lib/tkms
EXPOSE 8443 9100
ENTRYPOINT ["/usr/local/bin/tkms"]
CMD ["serve", "--config", "/etc/tkms/tkms.json"]
