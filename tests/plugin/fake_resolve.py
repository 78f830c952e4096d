"""A fake DaVinci Resolve that implements exactly the documented scripting
calls the Fairy script uses, with their documented signatures, and records
every call.

Resolve cannot run here; this fake follows its scripting README (Help >
Documentation > Developer). Anything the script calls that is not defined
below fails with AttributeError, so the script cannot drift onto undocumented
calls. Behaviour modelled on Resolve's: record frames include the timeline's
start frame; GetEnd() is exclusive; AppendToTimeline's endFrame is the last
frame; trackIndex must name an existing track and the range must be free there.
"""

from __future__ import annotations

import itertools
import os

_ids = itertools.count(1)


class Recorder:
    def __init__(self):
        self.calls: list[tuple[str, str, tuple]] = []

    def log(self, obj, method, *args):
        self.calls.append((type(obj).__name__, method, args))

    def named(self, method):
        return [args for _, m, args in self.calls if m == method]


class MediaPoolItem:
    def __init__(self, rec: Recorder, path: str, fps: str, frames: int):
        self._rec, self._props = rec, {"File Path": path, "FPS": fps, "Frames": str(frames)}
        self._name = os.path.basename(path)

    def GetClipProperty(self, propertyName=None):
        self._rec.log(self, "GetClipProperty", propertyName)
        return dict(self._props) if propertyName is None else self._props.get(propertyName, "")

    def GetName(self):
        self._rec.log(self, "GetName")
        return self._name


class TimelineItem:
    def __init__(self, rec: Recorder, timeline, name, media_item, track, start, duration, source_start,
                 left_offset, right_offset):
        self._rec, self._timeline = rec, timeline
        self.name, self.media_item, self.track = name, media_item, track
        self.start, self.duration, self.source_start = start, duration, source_start
        self.left_offset, self.right_offset = left_offset, right_offset
        self.uid = f"item-{next(_ids)}"
        self.markers: dict[int, dict] = {}
        self.takes: list[dict] = []
        self.selected_take = 0
        self.finalized = False

    def GetName(self):
        self._rec.log(self, "GetName")
        return self.name

    def GetStart(self, subframe_precision=False):
        self._rec.log(self, "GetStart")
        return self.start

    def GetEnd(self, subframe_precision=False):
        self._rec.log(self, "GetEnd")
        return self.start + self.duration

    def GetDuration(self, subframe_precision=False):
        self._rec.log(self, "GetDuration")
        return self.duration

    def GetLeftOffset(self, subframe_precision=False):
        self._rec.log(self, "GetLeftOffset")
        return self.left_offset

    def GetRightOffset(self, subframe_precision=False):
        self._rec.log(self, "GetRightOffset")
        return self.right_offset

    def GetSourceStartFrame(self):
        self._rec.log(self, "GetSourceStartFrame")
        return self.source_start

    def GetMediaPoolItem(self):
        self._rec.log(self, "GetMediaPoolItem")
        return self.media_item

    def GetTrackTypeAndIndex(self):
        self._rec.log(self, "GetTrackTypeAndIndex")
        return ["video", self.track]

    def GetUniqueId(self):
        self._rec.log(self, "GetUniqueId")
        return self.uid

    def AddMarker(self, frameId, color, name, note, duration, customData=""):
        self._rec.log(self, "AddMarker", frameId, color, name, note, duration, customData)
        if frameId in self.markers:
            return False
        self.markers[frameId] = {"color": color, "name": name, "note": note, "duration": duration,
                                 "customData": customData}
        return True

    def AddTake(self, mediaPoolItem, startFrame=None, endFrame=None):
        self._rec.log(self, "AddTake", mediaPoolItem, startFrame, endFrame)
        if not self.takes:  # becomes a take selector: the original is take 1
            self.takes.append({"mediaPoolItem": self.media_item, "startFrame": self.source_start,
                               "endFrame": self.source_start + self.duration - 1})
        self.takes.append({"mediaPoolItem": mediaPoolItem, "startFrame": startFrame, "endFrame": endFrame})
        return True

    def GetTakesCount(self):
        self._rec.log(self, "GetTakesCount")
        return len(self.takes)

    def SelectTakeByIndex(self, idx):
        self._rec.log(self, "SelectTakeByIndex", idx)
        if not 1 <= idx <= len(self.takes):
            return False
        self.selected_take = idx
        return True

    def FinalizeTake(self):
        self._rec.log(self, "FinalizeTake")
        if not self.takes:
            return False
        chosen = self.takes[self.selected_take - 1]
        self.media_item = chosen["mediaPoolItem"]
        self.takes, self.selected_take, self.finalized = [], 0, True
        return True


class Timeline:
    def __init__(self, rec: Recorder, name="Edit 1", fps="24", start_frame=86400, video_tracks=1):
        self._rec = rec
        self.name, self.fps, self.start_frame = name, fps, start_frame
        self.tracks: list[list[TimelineItem]] = [[] for _ in range(video_tracks)]
        self.current_item: TimelineItem | None = None
        self.selected: list[TimelineItem] = []
        self.marks: dict = {}

    # test helpers (not Resolve API)
    def add_item(self, track, name, media_item, start, duration, source_start, left_offset, right_offset):
        item = TimelineItem(self._rec, self, name, media_item, track, start, duration, source_start,
                            left_offset, right_offset)
        self.tracks[track - 1].append(item)
        self.tracks[track - 1].sort(key=lambda i: i.start)
        return item

    # documented API
    def GetName(self):
        self._rec.log(self, "GetName")
        return self.name

    def GetStartFrame(self):
        self._rec.log(self, "GetStartFrame")
        return self.start_frame

    def GetSetting(self, settingName=None):
        self._rec.log(self, "GetSetting", settingName)
        return {"timelineFrameRate": self.fps}.get(settingName, "")

    def GetTrackCount(self, trackType):
        self._rec.log(self, "GetTrackCount", trackType)
        return len(self.tracks) if trackType == "video" else 0

    def AddTrack(self, trackType, subTrackType=None):
        self._rec.log(self, "AddTrack", trackType, subTrackType)
        if trackType != "video":
            return False
        self.tracks.append([])
        return True

    def GetItemListInTrack(self, trackType, index):
        self._rec.log(self, "GetItemListInTrack", trackType, index)
        if trackType != "video" or not 1 <= index <= len(self.tracks):
            return None
        return list(self.tracks[index - 1])

    def GetCurrentVideoItem(self):
        self._rec.log(self, "GetCurrentVideoItem")
        return self.current_item

    def GetSelectedClips(self):
        self._rec.log(self, "GetSelectedClips")
        return list(self.selected)

    def GetMarkInOut(self):
        self._rec.log(self, "GetMarkInOut")
        return dict(self.marks)


class MediaPool:
    def __init__(self, rec: Recorder, project, import_fps="24"):
        self._rec, self._project = rec, project
        self.import_fps = import_fps
        self.items: list[MediaPoolItem] = []

    def ImportMedia(self, items):
        self._rec.log(self, "ImportMedia", list(items))
        created = []
        for path in items:
            if not isinstance(path, str) or not os.path.isfile(path):
                continue  # Resolve skips what it cannot import
            item = MediaPoolItem(self._rec, path, self.import_fps, 0)
            self.items.append(item)
            created.append(item)
        return created

    def AppendToTimeline(self, clipInfos):
        self._rec.log(self, "AppendToTimeline", clipInfos)
        timeline = self._project.timeline
        appended = []
        allowed = {"mediaPoolItem", "startFrame", "endFrame", "mediaType", "trackIndex", "recordFrame"}
        for info in clipInfos:
            assert set(info) <= allowed, f"undocumented clipInfo keys {set(info) - allowed}"
            assert {"mediaPoolItem", "startFrame", "endFrame"} <= set(info)
            track = info.get("trackIndex", 1)
            if not 1 <= track <= len(timeline.tracks):
                continue
            start = info.get("recordFrame", timeline.start_frame)
            # Resolve plays other rates at real speed: media frames -> timeline frames.
            media_fps = float(info["mediaPoolItem"].GetClipProperty("FPS"))
            duration = round((info["endFrame"] - info["startFrame"] + 1) * float(timeline.fps) / media_fps)
            if any(i.start < start + duration and i.start + i.duration > start for i in timeline.tracks[track - 1]):
                continue  # not free: the fake refuses rather than overwrite
            appended.append(timeline.add_item(track, info["mediaPoolItem"]._name, info["mediaPoolItem"], start,
                                              duration, info["startFrame"], info["startFrame"], 0))
        return appended


class Project:
    def __init__(self, rec: Recorder, timeline: Timeline | None):
        self._rec = rec
        self.timeline = timeline
        self.media_pool = MediaPool(rec, self)

    def GetCurrentTimeline(self):
        self._rec.log(self, "GetCurrentTimeline")
        return self.timeline

    def GetMediaPool(self):
        self._rec.log(self, "GetMediaPool")
        return self.media_pool


class ProjectManager:
    def __init__(self, rec: Recorder, project: Project | None):
        self._rec, self.project = rec, project

    def GetCurrentProject(self):
        self._rec.log(self, "GetCurrentProject")
        return self.project


class Resolve:
    def __init__(self, timeline: Timeline | None = None, rec: Recorder | None = None):
        self.rec = rec or (timeline._rec if timeline is not None else Recorder())
        self.project = Project(self.rec, timeline)
        self.project_manager = ProjectManager(self.rec, self.project)

    def GetProjectManager(self):
        self.rec.log(self, "GetProjectManager")
        return self.project_manager
