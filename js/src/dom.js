// DOM helpers shared by the widgets' pages: elements, sprite sheets and their tiles. Each widget's
// module imports what it uses; build.mjs bundles them into one file per widget.

export function toBlobPart(value) {
  if (value instanceof DataView || ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  return new Uint8Array(value);
}

// Decode a PNG or JPEG sprite sheet synced from Python. Returns {img, url} (img null for no
// bytes), or null when it does not decode (logged). The caller revokes url once it is replaced.
// (createImageBitmap was no faster here: in headless Chromium it took a 42-thumbnail JPEG sheet
// about 50 ms to decode against about 40 ms for Image.decode.)
export async function decodeSprite(bytes, what) {
  if (!bytes || bytes.byteLength === 0) return { img: null, url: null };
  const part = toBlobPart(bytes);
  const type = part[0] === 0xff && part[1] === 0xd8 ? "image/jpeg" : "image/png"; // JPEG's magic
  const url = URL.createObjectURL(new Blob([part], { type }));
  const img = new Image();
  img.src = url;
  try {
    await img.decode();
  } catch (err) {
    URL.revokeObjectURL(url);
    console.error(`atlaswidgets: ${what} did not decode`, err);
    return null;
  }
  return { img, url };
}

export function el(tag, className, parent) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (parent) parent.appendChild(node);
  return node;
}

// One example picture: a <div> whose CSS background is its thumbnail in a decoded sprite sheet
// ({img, url} from decodeSprite). Not a <canvas> per picture: Chromium composites every canvas as
// a layer of its own, and every caption overlapping one, so the ~40 canvases of an Explorer made
// every frame of the notebook re-layerize ~90 layers (a browser trace of clicks in the Explorer:
// Layerize + Commit took ~18 ms a frame on the page's main thread).
export function spriteTile(className, sheet, i, cols, thumb, parent) {
  const tile = el("div", className, parent);
  tile.style.width = `${thumb}px`;
  tile.style.height = `${thumb}px`;
  if (sheet && sheet.img) {
    // blob: URLs come from URL.createObjectURL, so they hold no quote to break out of
    tile.style.backgroundImage = `url("${sheet.url}")`;
    tile.style.backgroundSize = `${sheet.img.naturalWidth}px ${sheet.img.naturalHeight}px`;
    tile.style.backgroundPosition = sheetOffset(i, cols, thumb);
  }
  return tile;
}

// CSS background-position of picture i in a sheet of `cols` columns of `thumb` px pictures.
export function sheetOffset(i, cols, thumb) {
  return `${-(i % cols) * thumb}px ${-Math.floor(i / cols) * thumb}px`;
}

