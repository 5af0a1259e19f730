"""kp3d.losses"""
