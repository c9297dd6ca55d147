# Builds the fanfare server and a slim runtime image with the web app.
FROM rust:1.89-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev \
      libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p fanfare-api --bin fanfare

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      ca-certificates libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 \
      libavfilter8 libavdevice59 curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/fanfare /usr/local/bin/fanfare
COPY assets /app/assets
WORKDIR /app
ENV FANFARE_LISTEN=0.0.0.0:8080 FANFARE_DATA_DIR=/data FANFARE_ASSETS_DIR=/app/assets
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["fanfare"]
CMD ["serve"]
