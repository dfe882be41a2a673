"""Procedural toy 3-D scenes with exact labels, ray cast with numpy (no TensorFlow, no GPU).

World: y is up, the checkered floor is the plane y = 0 (1 x 1 squares), the camera stands at (0, h, 0) looking
along +z, pitched down by `camera_pitch`, with a 50 degree field of view (square images). One directional light
(the sun) gives Lambert shading and cast shadows. 1-3 objects (sphere, cube rotated about the vertical axis,
cylinder with its top cap, cone) rest on the floor without touching each other (their bottoms touch the floor and
are never seen, so they are not modelled).

Pixel (i, j) of an R x R image is the ray through the pixel centre: camera-space direction (x, y, 1) with
x = (j + 0.5 - R/2) / f, y = (R/2 - i - 0.5) / f, f = (R/2) / tan(FOV/2). Because its forward component is 1, the
hit distance along it *is* the camera-space depth (distance along the view axis), computed analytically in
float64. The sky, and anything farther than FAR along the view axis (the floor is clipped there and fades into the
horizon colour), gets depth FAR.

Salient object: the object with the largest visible area on a fixed REFERENCE_RESOLUTION grid (ties: the one whose
centre is nearest the camera), so the choice, and the caption that names it first, do not depend on the render
resolution. Sampled scenes are redrawn until the salient object's area leads the next one by SALIENT_MARGIN and every
object shows at least MIN_AREA_FRACTION of the image, so the salient object is unambiguous.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import numpy as np

from jaxprobe.toy.world import captions

FOV = math.radians(50.0)
FAR = 30.0
MAX_OBJECTS = 3
REFERENCE_RESOLUTION = 32
SALIENT_MARGIN = 1.2
MIN_AREA_FRACTION = 0.004
SIZE_RANGE = (0.3, 0.8)  # object size (sphere radius, cube half side, cylinder/cone base ~radius), world units
SMALL_BELOW = 0.55  # size word: "small" below, "large" from here on
# shape -> (horizontal radius, height) in units of the object's size
_DIMS = {"sphere": (1.0, 2.0), "cube": (1.0, 2.0), "cylinder": (0.8, 2.2), "cone": (1.0, 2.4)}
_EPS = 1e-9  # minimum hit distance
_OFFSET = 1e-6  # shadow-ray origins are lifted this far along the surface normal
_PLACEMENT_TRIES = 50  # per object, before the whole scene is redrawn

_AMBIENT, _FLOOR_AMBIENT, _FOG_START = 0.4, 0.45, 12.0
_LIGHT_SQUARE, _DARK_SQUARE = np.array([0.80, 0.80, 0.78]), np.array([0.36, 0.36, 0.38])
_HORIZON, _ZENITH = np.array([0.80, 0.86, 0.93]), np.array([0.40, 0.60, 0.90])


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object resting on the floor at (x, 0, z); `angle` (radians about the vertical axis) matters for cubes."""
    shape: str
    color: str
    size: float
    x: float
    z: float
    angle: float = 0.0

    def __post_init__(self):
        if self.shape not in captions.SHAPES:
            raise ValueError(f"unknown object type {self.shape!r}; valid types: {', '.join(captions.SHAPES)}")
        if self.color not in captions.COLORS:
            raise ValueError(f"unknown colour {self.color!r}; valid colours: {', '.join(captions.COLORS)}")
        if not self.size > 0:
            raise ValueError(f"object size must be > 0, got {self.size}")

    @property
    def radius(self) -> float:
        """Horizontal radius (half side for a cube)."""
        return _DIMS[self.shape][0] * self.size

    @property
    def height(self) -> float:
        return _DIMS[self.shape][1] * self.size

    @property
    def footprint(self) -> float:
        """Radius of the vertical cylinder that contains the object."""
        return self.radius * (math.sqrt(2.0) if self.shape == "cube" else 1.0)

    @property
    def size_word(self) -> str:
        return "small" if self.size < SMALL_BELOW else "large"


@dataclasses.dataclass(frozen=True)
class Scene:
    """Camera (height, downward pitch in radians), sun (azimuth, elevation in radians) and 1-3 objects."""
    camera_height: float
    camera_pitch: float
    light_azimuth: float
    light_elevation: float
    objects: tuple[SceneObject, ...]

    def __post_init__(self):
        object.__setattr__(self, "objects", tuple(self.objects))
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise ValueError(f"a scene has 1 to {MAX_OBJECTS} objects, got {len(self.objects)}")
        if not (self.camera_height > 0 and 0 < self.camera_pitch < math.pi / 2 and 0 < self.light_elevation
                <= math.pi / 2):
            raise ValueError("need camera_height > 0, 0 < camera_pitch < pi/2 and 0 < light_elevation <= pi/2")

    @property
    def light(self) -> np.ndarray:
        """Unit vector towards the sun [3]."""
        c = math.cos(self.light_elevation)
        return np.array([c * math.sin(self.light_azimuth), math.sin(self.light_elevation),
                         c * math.cos(self.light_azimuth)])

    def center_depths(self) -> np.ndarray:
        """Camera-space depth of each object's centre [K]."""
        s, c = math.sin(self.camera_pitch), math.cos(self.camera_pitch)
        return np.array([(o.height / 2 - self.camera_height) * -s + o.z * c for o in self.objects])

    @functools.cached_property
    def reference_areas(self) -> np.ndarray:
        """Visible pixel count of each object [K] on the REFERENCE_RESOLUTION grid."""
        label, _ = _primary(self, _rays(self, REFERENCE_RESOLUTION))
        return np.bincount(label, minlength=len(self.objects) + 2)[:len(self.objects)]

    @property
    def order(self) -> list[int]:
        """Object indices by decreasing reference area, ties by nearer centre; the first is the salient object."""
        depths = self.center_depths()
        return sorted(range(len(self.objects)), key=lambda k: (-self.reference_areas[k], depths[k]))

    @property
    def salient(self) -> int:
        return self.order[0]

    @property
    def caption(self) -> str:
        return captions.caption([(self.objects[k].size_word, self.objects[k].color, self.objects[k].shape)
                                 for k in self.order])


# ------------------------------------------------------------------------------------------------ ray casting
def _rays(scene: Scene, resolution: int) -> np.ndarray:
    """World-space directions [3, R*R] (row-major pixels) whose camera-space forward component is 1."""
    f = (resolution / 2) / math.tan(FOV / 2)
    c = (np.arange(resolution) + 0.5 - resolution / 2) / f
    xc, yc = np.tile(c, resolution), np.repeat(-c, resolution)
    s, co = math.sin(scene.camera_pitch), math.cos(scene.camera_pitch)
    # right = (1, 0, 0), up = (0, cos, sin), forward = (0, -sin, cos)
    return np.stack([xc, yc * co - s, yc * s + co])


def _rot_y(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([c * v[0] + s * v[2], v[1], -s * v[0] + c * v[2]])


def _local(obj: SceneObject, v: np.ndarray, *, point: bool) -> np.ndarray:
    """World point/direction [3, P] -> the object's frame (base centre at the origin, cube axes aligned)."""
    if point:
        v = v - np.array([[obj.x], [0.0], [obj.z]])
    return _rot_y(v, -obj.angle) if obj.angle else v


def _hit(obj: SceneObject, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Nearest hit distance (> 0) of rays o + t d with the object, inf where missed. o: [3, 1] or [3, P]; d: [3, P]."""
    o, d = _local(obj, o, point=True), _local(obj, d, point=False)
    r, h = obj.radius, obj.height
    with np.errstate(divide="ignore", invalid="ignore"):
        if obj.shape == "sphere":
            oc = o - np.array([[0.0], [r], [0.0]])
            a, b, c = (d * d).sum(0), (oc * d).sum(0), (oc * oc).sum(0) - r * r
            return _first(((-b - np.sqrt(b * b - a * c)) / a,), o, d, 0.0, h)
        if obj.shape == "cube":
            lo, hi = np.array([[-r], [0.0], [-r]]), np.array([[r], [h], [r]])
            t1, t2 = (lo - o) / d, (hi - o) / d
            near, far = np.minimum(t1, t2).max(0), np.maximum(t1, t2).min(0)
            return np.where((near <= far) & (near > _EPS), near, np.inf)
        # Cylinder (k = 0) and cone (apex at height h): x^2 + z^2 = (r - k y)^2 with k = r/h, for 0 <= y <= h.
        k = 0.0 if obj.shape == "cylinder" else r / h
        w = r - k * o[1]  # radius at the origin's height
        a = d[0] ** 2 + d[2] ** 2 - (k * d[1]) ** 2
        b = o[0] * d[0] + o[2] * d[2] + k * w * d[1]
        c = o[0] ** 2 + o[2] ** 2 - w ** 2
        sq = np.sqrt(b * b - a * c)
        if obj.shape == "cone":
            return _first(((-b - sq) / a, (-b + sq) / a), o, d, 0.0, h)
        # cylinder: only the near side root can be seen from outside; the top cap closes the far end
        t_cap = (h - o[1]) / d[1]
        inside = (o[0] + t_cap * d[0]) ** 2 + (o[2] + t_cap * d[2]) ** 2 <= r * r
        return _first(((-b - sq) / a, np.where(inside, t_cap, np.nan)), o, d, 0.0, h)


def _first(ts, o, d, y0: float, y1: float) -> np.ndarray:
    """Smallest candidate t > 0 whose hit height lies in [y0, y1] (candidates may be nan); inf if none."""
    best = np.inf
    for t in ts:
        y = o[1] + t * d[1]
        best = np.minimum(best, np.where((t > _EPS) & (y >= y0 - 1e-12) & (y <= y1 + 1e-12), t, np.inf))
    return best


def _normal(obj: SceneObject, p: np.ndarray) -> np.ndarray:
    """Outward unit normal [3, P] at world surface points p [3, P]."""
    q = _local(obj, p, point=True)
    r, h = obj.radius, obj.height
    if obj.shape == "sphere":
        n = (q - np.array([[0.0], [r], [0.0]])) / r
    elif obj.shape == "cube":
        rel = (q - np.array([[0.0], [h / 2], [0.0]])) / r
        axis = np.argmax(np.abs(rel), axis=0)
        n = np.zeros_like(q)
        n[axis, np.arange(q.shape[1])] = np.sign(rel[axis, np.arange(q.shape[1])])
    elif obj.shape == "cylinder":
        radial = np.hypot(q[0], q[2])
        cap = np.abs(h - q[1]) < np.abs(r - radial)
        n = np.where(cap, np.array([[0.0], [1.0], [0.0]]), np.stack([q[0], 0 * q[1], q[2]]) / r)
    else:
        k = r / h
        n = np.stack([q[0], k * k * (h - q[1]), q[2]])
        n = n / np.linalg.norm(n, axis=0)
    return _rot_y(n, obj.angle) if obj.angle else n


def _floor_distance(scene: Scene, d: np.ndarray) -> np.ndarray:
    """Hit distance [P] of rays from the camera with the plane y = 0 (inf for rays that do not go down)."""
    with np.errstate(divide="ignore"):
        return np.where(d[1] < 0, -scene.camera_height / d[1], np.inf)


def _primary(scene: Scene, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-ray label [P] (object k, K = floor, K+1 = sky) and camera-space depth [P] (FAR for the sky)."""
    origin = np.array([[0.0], [scene.camera_height], [0.0]])
    t = np.stack([_hit(obj, origin, d) for obj in scene.objects] + [_floor_distance(scene, d)])
    label = np.argmin(t, axis=0)
    depth = np.take_along_axis(t, label[None], 0)[0]
    sky = depth >= FAR
    label[sky] = len(scene.objects) + 1
    depth[sky] = FAR
    return label, depth


def _checker(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Box-filtered square wave (+-1, period 2) at u with filter width w (both [..]), for an anti-aliased floor."""
    def integral(x):
        return np.abs(np.mod(x / 2, 1.0) - 0.5)
    return 2.0 * (integral(u - w / 2) - integral(u + w / 2)) / w


def _floor_color(scene: Scene, d: np.ndarray, resolution: int) -> np.ndarray:
    """Checkered floor colour [P, 3] of every ray (box-filtered by the pixel footprint), before lighting."""
    t = np.minimum(_floor_distance(scene, d), 2 * FAR)  # finite, for the footprint gradients
    shade = 1.0
    for coord in (t * d[0], t * d[2]):
        g_row, g_col = np.gradient(coord.reshape(resolution, resolution))
        shade = shade * _checker(coord, (np.abs(g_row) + np.abs(g_col)).ravel() + 1e-6)
    mix = (0.5 - 0.5 * shade)[:, None]
    return mix * _LIGHT_SQUARE + (1 - mix) * _DARK_SQUARE


def render(scene: Scene, resolution: int = 128) -> dict:
    """Render one scene at resolution x resolution. Returns the per-image dict of `render_batch` without the batch
    axis ('caption', 'salient_color', 'salient_shape' are str)."""
    if not (isinstance(resolution, (int, np.integer)) and resolution >= 8):
        raise ValueError(f"resolution must be an int >= 8, got {resolution!r}")
    R, K = int(resolution), len(scene.objects)
    d = _rays(scene, R)
    label, depth = _primary(scene, d)
    sky, floor = label == K + 1, label == K
    p = np.array([[0.0], [scene.camera_height], [0.0]]) + depth * d
    n = np.zeros_like(p)
    n[1] = 1.0
    for k, obj in enumerate(scene.objects):
        m = label == k
        n[:, m] = _normal(obj, p[:, m])
    light = scene.light
    solid = ~sky
    origins = p[:, solid] + _OFFSET * n[:, solid]
    lit = np.zeros(R * R, bool)
    lit[solid] = np.all([np.isinf(_hit(obj, origins, light[:, None])) for obj in scene.objects], axis=0)
    lambert = lit * np.maximum(light @ n, 0.0)

    rgb = np.empty((R * R, 3))
    elevation = np.clip(d[1] / np.linalg.norm(d, axis=0) / 0.6, 0.0, 1.0)[:, None]
    rgb[:] = (1 - elevation) * _HORIZON + elevation * _ZENITH
    fog = np.clip((depth - _FOG_START) / (FAR - _FOG_START), 0.0, 1.0)[:, None]
    floor_rgb = _floor_color(scene, d, R) * (_FLOOR_AMBIENT + (1 - _FLOOR_AMBIENT) * lambert)[:, None]
    rgb[floor] = ((1 - fog) * floor_rgb + fog * _HORIZON)[floor]
    for k, obj in enumerate(scene.objects):
        m = label == k
        rgb[m] = np.asarray(captions.COLORS[obj.color]) * (_AMBIENT + (1 - _AMBIENT) * lambert[m])[:, None]

    masks = np.zeros((MAX_OBJECTS, R, R), bool)
    masks[:K] = label.reshape(R, R)[None] == np.arange(K)[:, None, None]
    pad = [""] * (MAX_OBJECTS - K)
    salient = scene.salient
    return {
        "rgb": np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8).reshape(R, R, 3),
        "depth": depth.astype(np.float32).reshape(R, R),
        "salient": masks[salient].copy(),
        "object_masks": masks,
        "boxes": boxes_from_masks(masks),
        "num_objects": np.int32(K),
        "caption": scene.caption,
        "object_shape": np.array([o.shape for o in scene.objects] + pad),
        "object_color": np.array([o.color for o in scene.objects] + pad),
        "object_size": np.array([o.size_word for o in scene.objects] + pad),
        "salient_index": np.int32(salient),
        "salient_color": scene.objects[salient].color,
        "salient_shape": scene.objects[salient].shape,
        "camera_height": np.float32(scene.camera_height),
        "camera_pitch": np.float32(scene.camera_pitch),
    }


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """Tight boxes float32 [K, 4] as (y0, x0, y1, x1) pixel edges (half-open: rows y0..y1-1) of masks [K, H, W];
    an empty mask gives (0, 0, 0, 0)."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for k, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if rows.size:
            boxes[k] = rows[0], cols[0], rows[-1] + 1, cols[-1] + 1
    return boxes


# ------------------------------------------------------------------------------------------------ sampling
def _in_view(scene_camera: tuple[float, float], obj: SceneObject) -> bool:
    """Whether the object's bounding box (8 corners) projects inside the image."""
    h, pitch = scene_camera
    s, c = math.sin(pitch), math.cos(pitch)
    e = obj.footprint
    xs = obj.x + np.array([-e, e, -e, e, -e, e, -e, e])
    ys = np.array([0.0] * 4 + [obj.height] * 4) - h
    zs = obj.z + np.array([-e, -e, e, e] * 2)
    depth = -s * ys + c * zs
    up = c * ys + s * zs
    lim = math.tan(FOV / 2)
    return bool(np.all(depth > 0) and np.all(np.abs(xs / depth) <= lim) and np.all(np.abs(up / depth) <= lim))


def sample_scene(seed: int) -> Scene:
    """The scene of `seed`, drawn with np.random.default_rng(seed); placements that leave the view, make objects
    touch, hide an object or leave the salient object ambiguous are redrawn from the same generator."""
    rng = np.random.default_rng(seed)
    names = list(captions.COLORS)
    while True:
        camera = (rng.uniform(1.2, 2.6), math.radians(rng.uniform(10.0, 24.0)))
        # the sun stands behind the camera (within 80 degrees), so visible faces are mostly lit and shadows show
        light = (math.pi + math.radians(rng.uniform(-80.0, 80.0)), math.radians(rng.uniform(35.0, 65.0)))
        colors = rng.choice(len(names), size=rng.integers(1, MAX_OBJECTS + 1), replace=False)
        objects: list[SceneObject] = []
        for ci in colors:
            for _ in range(_PLACEMENT_TRIES):
                shape = captions.SHAPES[rng.integers(len(captions.SHAPES))]
                z = rng.uniform(3.0, 9.0)
                obj = SceneObject(shape=shape, color=names[ci], size=rng.uniform(*SIZE_RANGE),
                                  x=rng.uniform(-0.5, 0.5) * z, z=z,
                                  angle=rng.uniform(0.0, math.pi / 2) if shape == "cube" else 0.0)
                apart = all(math.hypot(obj.x - o.x, obj.z - o.z) > obj.footprint + o.footprint + 0.1 for o in objects)
                if apart and _in_view(camera, obj):
                    objects.append(obj)
                    break
        if len(objects) < len(colors):
            continue
        scene = Scene(*camera, *light, objects=tuple(objects))
        areas = np.sort(scene.reference_areas)[::-1]
        if areas[-1] >= MIN_AREA_FRACTION * REFERENCE_RESOLUTION ** 2 and (
                len(areas) == 1 or areas[0] >= SALIENT_MARGIN * areas[1]):
            return scene


def render_scene(seed: int, resolution: int = 128) -> dict:
    """The scene of `seed` rendered at resolution x resolution (see `render_batch` for the keys)."""
    return render(sample_scene(seed), resolution)


def render_batch(seeds: Sequence[int], resolution: int = 128) -> dict:
    """Render the scenes of `seeds` (each depends only on its own seed). Returns, with N = len(seeds), R = resolution:

    rgb uint8 [N,R,R,3]; depth float32 [N,R,R] (camera-space depth, FAR for the sky); salient bool [N,R,R];
    object_masks bool [N,3,R,R] and boxes float32 [N,3,4] (y0,x0,y1,x1 pixel edges), padded with False / 0;
    num_objects int32 [N]; caption list[str]; object_shape / object_color / object_size str [N,3] (padded with "");
    salient_index int32 [N]; salient_color / salient_shape str [N]; camera_height / camera_pitch float32 [N].
    """
    if len(seeds) == 0:
        raise ValueError("render_batch needs at least one seed")
    scenes = [render_scene(int(s), resolution) for s in seeds]
    out = {k: np.stack([s[k] for s in scenes]) for k in scenes[0] if k != "caption"}
    out["caption"] = [s["caption"] for s in scenes]
    return out
