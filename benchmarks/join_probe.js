// Preloaded by benchmarks/join_time.py into the join page, in Chromium and in Firefox alike, before the
// page's own scripts: timestamps (performance marks, ms since the link was opened) of each phase of a
// join, taken from outside the page's code (getUserMedia, fetch and RTCPeerConnection are wrapped, not
// changed), and the first remote frame seen the same way in both engines: Firefox counts no playback
// frames for a MediaStream, so a frame is "shown" once the remote <video> has a picture and its
// currentTime has moved; the picture changing afterwards says the video is live.
(() => {
  const seen = new Set();
  const mark = (name) => {
    if (seen.has(name)) return;
    seen.add(name);
    performance.mark(name);
  };

  const devices = navigator.mediaDevices;
  if (devices && devices.getUserMedia) {
    const getUserMedia = devices.getUserMedia.bind(devices);
    devices.getUserMedia = async (constraints) => {
      mark("bx-gum-start");
      const stream = await getUserMedia(constraints);
      mark("bx-gum-end");
      return stream;
    };
  }

  const fetch = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const url = String((input && input.url) || input).split("?")[0];
    const method = ((init && init.method) || "GET").toUpperCase();
    let tag = null;
    if (method === "POST" && /\/v1\/conferences\/[^/]+\/participants$/.test(url)) tag = "admit";
    else if (method === "POST" && /\/v1\/participants\/[^/]+\/offer$/.test(url)) tag = "offer";
    if (tag) mark(`bx-${tag}-start`);
    const response = await fetch(input, init);
    if (tag) mark(`bx-${tag}-end`);
    return response;
  };

  let watching = false;
  const watchRemote = () => {
    if (watching) return;
    watching = true;
    const canvas = document.createElement("canvas");
    canvas.width = 32;
    canvas.height = 18;
    const g = canvas.getContext("2d", { willReadFrequently: true });
    let first = null;
    const timer = setInterval(() => {
      const v = document.getElementById("remote");
      if (!v || v.readyState < 2 || !v.videoWidth || !(v.currentTime > 0)) return;
      g.drawImage(v, 0, 0, canvas.width, canvas.height);
      const picture = g.getImageData(0, 0, canvas.width, canvas.height).data.join(",");
      if (first === null) {
        first = picture;
        mark("bx-first-frame");
      } else if (picture !== first) {
        mark("bx-picture-changed");
        clearInterval(timer);
      }
    }, 5);
  };

  const Native = window.RTCPeerConnection;
  if (Native) {
    window.RTCPeerConnection = class extends Native {
      constructor(...args) {
        super(...args);
        mark("bx-pc");
        this.addEventListener("icegatheringstatechange", () => {
          if (this.iceGatheringState === "complete") mark("bx-gathering-complete");
        });
        this.addEventListener("iceconnectionstatechange", () => {
          const s = this.iceConnectionState;
          if (s === "checking") mark("bx-ice-checking");
          if (s === "connected" || s === "completed") mark("bx-ice-connected");
        });
        this.addEventListener("connectionstatechange", () => {
          if (this.connectionState === "connected") mark("bx-connected");
        });
        this.addEventListener("track", (ev) => {
          if (ev.track.kind === "video") {
            mark("bx-track");
            watchRemote();
          }
        });
      }

      async setRemoteDescription(description) {
        const result = await super.setRemoteDescription(description);
        mark("bx-remote-set");
        return result;
      }
    };
  }
})();
