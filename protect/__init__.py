"""The in-the-wild anonymization tool behind anonymize.py: photos, videos and folders.

Modules: protector (FaceProtector, the Python API), frame (five points -> crop and back), record (what
recovery needs), photo_io and video_io (files in and out), video (the two-pass video pipeline), track
(face tracks through a video), run (one path or a folder tree), face_detect (detectors with five
points; YuNet and CenterFace in their own modules).
"""
