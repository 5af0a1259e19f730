"""kp3d.viz"""
