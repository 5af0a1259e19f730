"""kp3d.nn"""
