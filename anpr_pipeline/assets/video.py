"""The ``video`` asset: probe an upload (codec, fps, duration, size) and fail clearly if corrupt."""

import math

from dagster import AssetExecutionContext, Output, asset

from anpr_pipeline.assets.common import decode_failure, find_upload, local_copy
from anpr_pipeline.checks import VIDEO_DECODABLE, check_video
from anpr_pipeline.partitions import videos_partitions
from anpr_pipeline.resources.object_store import ObjectStoreResource
from anpr_pipeline.resources.pipeline_config import PipelineConfig
from anpr_pipeline.vision.decode import VideoDecodeError, probe


@asset(
    partitions_def=videos_partitions,
    group_name="ingest",
    kinds={"video", "pyav"},
    owners=["team:traffic-ops"],
    check_specs=[VIDEO_DECODABLE],
    description="One uploaded camera video: container, codec, fps, duration and resolution from a probe. "
    "A corrupt or truncated file fails this partition only, with the reason.",
)
def video(context: AssetExecutionContext, bucket: ObjectStoreResource, pipeline: PipelineConfig):
    store = bucket.get_store()
    upload = find_upload(store, context.partition_key)
    size = next((o.size for o in store.list(upload.key) if o.key == upload.key), 0)
    with local_copy(store, upload.key) as path:
        try:
            info = probe(path)
        except VideoDecodeError as exc:
            raise decode_failure(exc, upload.key) from exc
    fps = upload.fps_hint or info.fps
    sample_fps = min(pipeline.sample_fps, fps) if fps else pipeline.sample_fps
    result = {
        "video_key": upload.key,
        "camera_id": upload.camera_id,
        "started_at": upload.started_at.isoformat(),
        "timestamp": upload.timestamp,
        "region": upload.region,
        "container": info.container,
        "codec": info.codec,
        "width": info.width,
        "height": info.height,
        "fps": fps,
        "duration_s": info.duration_s,
        "frame_count": info.frame_count,
        "size_bytes": size,
        "sample_fps": sample_fps,
        "sampled_frames_expected": int(math.ceil(info.duration_s * sample_fps)) if info.duration_s else 0,
    }
    yield Output(
        result,
        metadata={
            "video_key": upload.key,
            "camera_id": upload.camera_id,
            "started_at": upload.started_at.isoformat(),
            "codec": info.codec,
            "resolution": f"{info.width}x{info.height}",
            "fps": round(fps, 3),
            "duration_s": round(info.duration_s, 3),
            "size_bytes": size,
        },
    )
    yield check_video(result)
