"""kp3d.engine"""
