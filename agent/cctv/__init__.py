"""AI CCTV on the camera edge box (issue 19): detect people, track them per camera, publish tracklets.

The chain per camera is ``frame -> motion_detector (+ hog_verifier / litert_detector) -> byte_tracker
-> ground_plane + appearance -> tracklet_message``.  Only ground-plane positions and a compact
appearance summary leave the box (agent.wire_schema.Tracklet); pixels stay here unless the site turns
evidence clips on (evidence_clips.py).  Cross-camera association is the controller's job.
"""
